"""Fine-tuning strategies: which part of a pretrained backbone trains, and when that changes."""

from __future__ import annotations

import logging
import sys
from typing import Any

from torch import nn

from flexcnn.models.backbone import Stage
from flexcnn.models.registry import InputSpec, ModelAdapter

log = logging.getLogger(__name__)


class PretrainedAdapter(ModelAdapter):
    """A backbone + new head whose trainable part is set by the fine-tuning strategy.

    The trainable part is everything at or after a *cut* in module order (the
    start of a stage), plus the head. feature_extraction: head only; partial:
    the last K stages; full: everything; two_phase: head only until
    ``head_epochs``, then the last K stages (``on_epoch_start`` returns True and
    run() rebuilds the optimiser).
    """

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        *,
        name: str,
        head: nn.Module,
        stages: list[Stage],
        strategy: str,
        unfreeze_stages: int,
        head_epochs: int,
        backbone_lr_mult: float,
    ) -> None:
        super().__init__(module, spec)
        self.name, self.head, self.stages, self.strategy = name, head, stages, strategy
        self.backbone_lr_mult = backbone_lr_mult
        if unfreeze_stages > len(stages) and strategy in ("partial", "two_phase"):
            log.warning(
                "model.unfreeze_stages=%d but %s has %d stages; unfreezing all of them",
                unfreeze_stages,
                name,
                len(stages),
            )
        self.unfreeze_stages = min(unfreeze_stages, len(stages))
        # run() reads this to know when the optimiser was last rebuilt (on resume).
        self.phase_switch_epoch: int | None = (
            head_epochs if strategy == "two_phase" and self.unfreeze_stages > 0 else None
        )
        self._switched = False
        index = {id(m): i for i, m in enumerate(module.modules())}
        self._n_modules = len(index)
        head_modules = {id(m) for m in head.modules()}
        self._head_params = {id(p) for p in head.parameters()}
        self._params = [(index[id(m)], p) for m in module.modules() for p in m.parameters(recurse=False)]
        self._leaves = [
            (index[id(m)], m)
            for m in module.modules()
            if next(m.children(), None) is None and id(m) not in head_modules
        ]
        self._stage_starts = [min(index[id(m)] for m in s.modules) for s in stages]
        self._frozen: list[nn.Module] = []
        self.cut = 0
        initial = {"feature_extraction": 0, "two_phase": 0, "partial": self.unfreeze_stages}.get(strategy, sys.maxsize)
        self._set_trainable(initial)

    def _cut_for(self, stages: int) -> int:
        if stages <= 0:
            return self._n_modules  # past every module: only the head trains
        if stages >= len(self.stages):
            return 0  # everything, including parameters outside any stage (ViT's class token)
        return self._stage_starts[len(self.stages) - stages]

    def _set_trainable(self, stages: int) -> None:
        self.cut = self._cut_for(stages)
        self.trainable_stages = min(stages, len(self.stages))
        for i, p in self._params:
            p.requires_grad_(id(p) in self._head_params or i >= self.cut)
        self._frozen = [m for i, m in self._leaves if i < self.cut]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Backbone at ``lr * backbone_lr_mult``, head at ``lr``; trainable parameters only.

        The head is the last group, so the logged ``lr`` is the head's.
        """
        backbone = [p for _, p in self._params if p.requires_grad and id(p) not in self._head_params]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr * self.backbone_lr_mult, "name": "backbone"},
            {"params": head, "lr": lr, "name": "head"},
        ]

    def on_epoch_start(self, epoch: int) -> bool:
        """two_phase: at ``head_epochs`` unfreeze the last K stages; True when that changed the trainable set."""
        if self.phase_switch_epoch is None or self._switched or epoch < self.phase_switch_epoch:
            return False
        self._switched = True
        before = self.cut
        self._set_trainable(self.unfreeze_stages)
        log.info(
            "two_phase: epoch %d, unfreezing %s (%s trainable parameters)",
            epoch + 1,
            ", ".join(s.name for s in self.stages[len(self.stages) - self.unfreeze_stages :]),
            f"{self.parameter_counts()['params/trainable']:,}",
        )
        return self.cut != before

    def train_mode(self) -> None:
        """Training mode, except frozen layers: their batch-norm statistics stay put, their dropout off."""
        self.module.train()
        for m in self._frozen:
            m.eval()

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameters, the head's, and for two_phase the trainable count after the switch."""
        counts = super().parameter_counts()
        counts["params/head"] = sum(p.numel() for p in self.head.parameters())
        if self.phase_switch_epoch is not None:
            cut = self._cut_for(self.unfreeze_stages)
            counts["params/trainable_phase2"] = sum(
                p.numel() for i, p in self._params if id(p) in self._head_params or i >= cut
            )
        return counts

    def describe(self) -> str:
        """One line: strategy, trainable stages and parameter counts."""
        counts = self.parameter_counts()
        names = [s.name for s in self.stages[len(self.stages) - self.trainable_stages :]]
        return (
            f"{self.name} ({self.strategy}): training {', '.join([*names, 'head'])}; "
            f"{counts['params/trainable']:,} of {counts['params/total']:,} parameters trainable; "
            f"stages: {', '.join(s.name for s in self.stages)}"
        )
