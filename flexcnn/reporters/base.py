"""The Reporter protocol: how a run tells the outside world what happened.

The training loop calls ``on_start`` once, ``on_epoch`` after every epoch and
``on_end`` once with the result, also when the run was stopped or failed. A
reporter that wants the run to stop early (Optuna pruning) raises
``StopRun`` from ``on_epoch``; run() then finishes cleanly and returns a
result whose status says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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


@runtime_checkable
class Reporter(Protocol):
    def on_start(self, info: RunInfo) -> None: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_end(self, result: RunResult) -> None: ...


class BaseReporter:
    """No-op defaults, plus optional per-batch progress hooks."""

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
