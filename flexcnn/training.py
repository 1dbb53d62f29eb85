"""One run's training state and its steps: an epoch, a checkpoint, a resume, an evaluation.

run() builds a ``Training`` before the first epoch and drives it; everything the
epoch loop touches (model, loaders, loss, optimiser, schedule, early stopping,
gradient scaler, random generators) lives here, so a checkpoint can be taken of
it and a resumed run restores it to exactly where it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flexcnn.checkpoint import Checkpoint, ResumeState
from flexcnn.config import DataConfig, RunConfig
from flexcnn.data import DataSplits
from flexcnn.data.base import Split
from flexcnn.data.loaders import make_loader
from flexcnn.engine import EvalOutput, evaluate, train_one_epoch
from flexcnn.errors import TrainingDiverged
from flexcnn.hardware import Hardware
from flexcnn.metrics import macro_f1
from flexcnn.models import ModelAdapter
from flexcnn.optim import Schedule, make_optimizer
from flexcnn.pipeline import Pipeline


class EarlyStopping:
    """Tracks the best monitored value and the epochs since it improved."""

    def __init__(self, mode: str, patience: int | None) -> None:
        self.mode, self.patience = mode, patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def class_weights(splits: DataSplits) -> torch.Tensor:
    """Inverse class frequencies of the training split, mean 1."""
    counts = torch.tensor(splits.class_counts("train"), dtype=torch.float32).clamp_min(1)
    return counts.sum() / (len(counts) * counts)


def make_train_loader(
    splits: DataSplits,
    data: DataConfig,
    device: torch.device,
    generator: torch.Generator,
    weights: torch.Tensor | None,
) -> Any:
    """The shuffled training loader; it draws by ``weights`` when data.class_weighting is sampler."""
    return make_loader(
        splits.train,
        batch_size=data.batch_size,
        device=device,
        train=True,
        resident=data.resident != "never",
        generator=generator,
        num_workers=data.num_workers,
        weights=weights[splits.train.targets] if data.class_weighting == "sampler" and weights is not None else None,
    )


@dataclass
class Training:
    """The model, its data and everything that changes while it trains."""

    config: RunConfig
    hw: Hardware
    pipe: Pipeline
    module: nn.Module  # the weights: what checkpoints hold
    net: nn.Module  # what runs: the module, compiled when train.compile asks for it
    train_loader: Any
    loss_fn: nn.Module
    loader_gen: torch.Generator  # shuffling
    augment_gen: torch.Generator  # augmentation, on the device
    scaler: torch.amp.GradScaler | None = None
    val_loader: Any = field(init=False)
    tracker: EarlyStopping = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    schedule: Schedule = field(init=False)
    start_epoch: int = field(init=False, default=0)
    eval_loss: nn.Module = field(init=False, default_factory=nn.CrossEntropyLoss)  # plain CE: val/loss compares

    def __post_init__(self) -> None:
        self.val_loader = self.eval_loader(self.pipe.splits.val)
        self.tracker = EarlyStopping(self.config.train.monitor_mode, self.config.train.early_stopping)

    def _train_input(self, images: torch.Tensor) -> torch.Tensor:
        """A training batch as the model takes it, augmented (called for every batch: keep it plain)."""
        return self.pipe.transform(images, train=True, generator=self.augment_gen)

    def _eval_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.transform(images, train=False)

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    @property
    def adapter(self) -> ModelAdapter:
        return self.pipe.adapter

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)

    def new_optimizer(self, from_epoch: int) -> None:
        """A fresh optimiser over the adapter's parameter groups, scheduled over the epochs left."""
        cfg = self.config
        self.optimizer = make_optimizer(cfg.optim, self.adapter.param_groups(cfg.optim.lr))
        self.schedule = Schedule(
            cfg.optim,
            self.optimizer,
            epochs=self.epochs - from_epoch,
            steps_per_epoch=self.batches_per_epoch,
            mode=cfg.train.monitor_mode,
        )

    def resume(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` (a last.pt): weights, optimiser, schedule, early stopping, RNGs."""
        assert checkpoint.resume is not None
        state = checkpoint.resume
        self.start_epoch = checkpoint.epoch
        self.adapter.on_epoch_start(self.start_epoch - 1)  # re-apply any phase switch already passed
        self.module.load_state_dict(checkpoint.model)
        self.new_optimizer(_phase_start(self.adapter, self.start_epoch))
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.schedule)
        self.tracker.load_state_dict(state.early_stopping)
        self._restore_rng(state.rng)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)

    def begin_epoch(self, epoch: int) -> None:
        """The adapter's hook (a two-phase model unfreezes its backbone); a new optimiser when it asks."""
        if self.adapter.on_epoch_start(epoch):
            self.new_optimizer(epoch)

    def train_epoch(self, epoch: int, on_batch: Callable[[int], None]) -> dict[str, float]:
        """Train one epoch, validate, step the schedule; the epoch's metrics (``epoch`` is 1-based there)."""
        self.adapter.train_mode()
        stats = train_one_epoch(
            self.net,
            self.train_loader,
            self._train_input,
            self.optimizer,
            self.loss_fn,
            device=self.hw.device,
            amp_dtype=self.hw.amp_dtype,
            scaler=self.scaler,
            grad_clip=self.config.train.grad_clip,
            step_scheduler=self.schedule.step_batch,
            epoch=epoch,
            on_batch=on_batch,
        )
        val = self.evaluate(self.val_loader)
        metrics = {
            "epoch": epoch + 1,
            "train/loss": stats.loss,
            "train/acc": stats.acc,
            "val/loss": val.loss,
            "val/acc": val.acc,
            # Only F1 each epoch; confusion, AUROC and per-class tables are for the final evaluation.
            "val/f1_macro": macro_f1(val.probs, val.targets, self.pipe.splits.num_classes),
            "lr": self.schedule.lr(),
            "epoch_seconds": stats.seconds,
            "images_per_second": stats.images_per_second,
        }
        if not math.isfinite(val.loss):
            raise TrainingDiverged(f"validation loss became {val.loss} in epoch {epoch + 1}")
        self.schedule.step_epoch(metrics[self.config.train.monitor])
        return metrics

    def evaluate(self, loader: Any) -> EvalOutput:
        """Loss, accuracy and class probabilities over ``loader``, without augmentation."""
        return evaluate(
            self.net, loader, self._eval_input, self.eval_loss, device=self.hw.device, amp_dtype=self.hw.amp_dtype
        )

    def eval_loader(self, split: Split) -> Any:
        data = self.config.data
        return make_loader(
            split,
            batch_size=data.eval_batch_size or max(data.batch_size, 256),
            device=self.hw.device,
            train=False,
            resident=data.resident != "never",
            num_workers=data.num_workers,
        )

    def checkpoint(self, epoch: int, *, metrics: dict[str, float] | None = None, resumable: bool = False) -> Checkpoint:
        """The checkpoint after ``epoch`` epochs: best.pt carries ``metrics``, last.pt is ``resumable``."""
        return Checkpoint(
            model=self.module.state_dict(),
            epoch=epoch,
            config=self.config.to_dict(),
            classes=self.pipe.splits.classes,
            input=self.pipe.input,
            metrics=metrics,
            resume=self._resume_state() if resumable else None,
        )

    def _resume_state(self) -> ResumeState:
        return ResumeState(
            optimizer=self.optimizer.state_dict(),
            schedule=self.schedule.state_dict(),
            early_stopping=self.tracker.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler else {},
            rng=self._rng_state(),
        )

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "loader": self.loader_gen.get_state(),
            "augment": self.augment_gen.get_state(),
        }
        if self.hw.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.hw.device)
        return state

    def _restore_rng(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self.loader_gen.set_state(state["loader"])
        self.augment_gen.set_state(state["augment"])
        if self.hw.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.hw.device)


def _phase_start(adapter: ModelAdapter, epoch: int) -> int:
    """The epoch at which the current optimiser was (re)built, for schedule length."""
    start = 0
    for e in range(epoch):
        if adapter.phase_switch_epoch == e:
            start = e
    return start
