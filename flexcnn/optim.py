"""Optimisers and learning-rate schedules, stepped per batch (plateau: per epoch)."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import lr_scheduler

from flexcnn.sections import OptimConfig


def make_optimizer(cfg: OptimConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    groups = [g for g in param_groups if g["params"]]
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Schedule:
    """The configured learning-rate schedule over ``epochs`` x ``steps_per_epoch`` batches."""

    def __init__(
        self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, mode: str
    ) -> None:
        self.cfg = cfg
        self.optimizer = optimizer
        total = max(1, epochs * steps_per_epoch)
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        self.plateau: lr_scheduler.ReduceLROnPlateau | None = None
        main: lr_scheduler.LRScheduler | None = None
        if cfg.scheduler == "cosine":
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=cfg.min_lr)
        elif cfg.scheduler == "step":
            main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
        elif cfg.scheduler == "onecycle":
            # OneCycle has its own warm-up phase.
            warmup = 0
            max_lr = [g["lr"] for g in optimizer.param_groups]
            main = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
        elif cfg.scheduler == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=cfg.gamma, patience=cfg.plateau_patience, min_lr=cfg.min_lr
            )
        if warmup > 0:
            warm = lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
            rest = main or lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
            main = lr_scheduler.SequentialLR(optimizer, [warm, rest], milestones=[warmup])
        self.per_step = main

    def step_batch(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def step_epoch(self, monitored: float) -> None:
        if self.plateau is not None:
            self.plateau.step(monitored)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[-1]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": self.per_step.state_dict() if self.per_step else None,
            "plateau": self.plateau.state_dict() if self.plateau else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
