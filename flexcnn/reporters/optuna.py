"""The Optuna pruning reporter: report each epoch's metric to the trial, stop when told to.

Optuna's contract is ``trial.report(value, step)`` -> ``trial.should_prune()``
-> ``raise optuna.TrialPruned``. The training loop must not know about Optuna,
so this reporter raises ``StopRun("pruned")`` instead; run() finishes cleanly
(files written, W&B run marked pruned) and the objective turns the pruned
result into ``optuna.TrialPruned``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flexcnn.reporters.base import Reporter, RunInfo, StopRun

if TYPE_CHECKING:
    import optuna


class OptunaPruningReporter(Reporter):
    """Reports ``metric`` at step ``epoch`` (1-based) and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.trial.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.pruned_at: int | None = None
        self.epochs: int | None = None  # the run's planned epochs, known from on_start

    def on_start(self, info: RunInfo) -> None:
        self.pruned_at = None
        self.epochs = info.config.train.epochs

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None:
            raise KeyError(f"the run logs no {self.metric!r}; logged keys: {', '.join(sorted(metrics))}")
        step = epoch + 1
        if not math.isfinite(value):
            return  # a diverged run fails on its own; Optuna refuses NaN reports
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.trial.report(float(value), step)
        except UpdateFinishedTrialError:
            # Another worker declared this trial dead (missed heartbeats) and queued a copy: stop, it takes over.
            raise StopRun("interrupted", f"trial was ended elsewhere (missed heartbeats) at epoch {step}") from None
        # After the last epoch the training is paid for and only the test evaluation is left: the value is
        # reported (other trials are judged against it) but the trial is not pruned; it ends COMPLETE.
        if (self.epochs is None or step < self.epochs) and self.trial.should_prune():
            self.pruned_at = step
            raise StopRun("pruned", f"pruned by Optuna at epoch {step} ({self.metric} {value:.4f})")
