"""The reporter contract: how a run tells the outside world what happened.

``Reporter`` is the base every reporter subclasses; its docstring gives the hook
order. ``RunInfo`` is what a reporter learns at the start, ``RunResult`` what it
learns at the end, and ``StopRun`` how it ends a run early (status pruned or
interrupted); run() then finishes cleanly and returns a result whose status says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from flexcnn.config import RunConfig
    from flexcnn.metrics import ClassificationReport


class StopRun(Exception):
    """Raised by a reporter to stop training after the current epoch."""

    def __init__(self, status: str, reason: str = "") -> None:
        super().__init__(reason or status)
        self.status = status
        self.reason = reason


@dataclass
class RunInfo:
    """What is known when training starts."""

    config: RunConfig
    run_dir: Path
    classes: list[str]
    parameter_counts: dict[str, int]
    device: str
    train_size: int
    val_size: int
    test_size: int
    start_epoch: int = 0  # > 0 when resumed
    history: list[dict[str, float]] = field(default_factory=list)  # metrics of the epochs before start_epoch


@dataclass
class SamplePredictions:
    """A few evaluated images with their true and predicted classes."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    targets: list[int]
    predictions: list[int]
    confidences: list[float]


@dataclass
class RunResult:
    """What a run produced. ``summary`` uses the same metric keys everywhere."""

    status: str  # completed | early_stopped | pruned | interrupted | failed
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, float]]
    classes: list[str]
    monitor: str
    best_value: float | None = None
    best_epoch: int | None = None
    eval_split: str = "test"
    report: ClassificationReport | None = None
    probs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    samples: SamplePredictions | None = None
    checkpoint: Path | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "early_stopped")


class Reporter:
    """The one contract between a run and the outside world: console, files, W&B, Optuna, yours.

    Subclass it and override the hooks you need; the others do nothing. run() calls,
    for every reporter, in this order (tests/contracts/test_reporters.py checks it
    for every registered reporter):

    - ``on_start(info)`` once, before the first epoch;
    - for each epoch: ``on_epoch_start(epoch, batches)``, ``on_batch(images)`` after
      every training batch, then ``on_epoch(epoch, metrics)`` once the epoch is
      validated (``epoch`` is 0-based; ``metrics["epoch"]`` counts from 1). An
      epoch cut short (Ctrl-C, a NaN loss) gets no ``on_epoch``;
    - ``on_end(result)`` exactly once, whatever the outcome: completed,
      early_stopped, pruned, interrupted or failed (``result.status``).

    ``on_epoch`` brackets the epoch's checkpoint. Reporters with
    ``keeps_record = True`` (the run folder's metrics.jsonl) hear first, before
    last.pt is written, so the record never lags the checkpoint a resume starts
    from: a kill in between re-runs the epoch rather than leaving a hole. The
    others hear once the checkpoint is on disk. Any of them may end the run by
    raising ``StopRun`` from ``on_epoch`` (Optuna pruning does); the run stops once
    every reporter has seen that epoch. Record keepers also hear every other hook
    first, and a run always has one: run() adds ``FilesReporter`` when it is given none.

    Keep ``on_batch`` cheap: it runs inside the training loop.
    """

    keeps_record: ClassVar[bool] = False

    def on_start(self, info: RunInfo) -> None:
        pass

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        pass

    def on_batch(self, images: int) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_end(self, result: RunResult) -> None:
        pass
