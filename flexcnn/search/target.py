"""The study's target (``metric.target`` in the sweep file): when it is reached, and stopping for it.

A study is over once one COMPLETE trial reached the target: workers start no new trial
(flexcnn.search.workers), and trials already running in any worker stop after their next
epoch (:class:`TargetReporter`, which looks at the study's storage after each epoch), rather
than running to their end for nothing.

A trial stopped this way is recorded PRUNED with the user attribute ``stopped: "target
reached"``: it did not fail (FAIL would count towards ``--max-failures`` and read as a fault),
and it must not be COMPLETE, whose value would be a best-so-far of fewer epochs ranked beside
finished trials. PRUNED already means "cut short by the study, not by a fault" everywhere
(status counts it as finished, ``best`` skips it, the report draws its curve dashed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flexcnn.reporters.base import Reporter, RunInfo, StopRun

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

STOPPED_ATTR = "stopped"
STOPPED_AT_TARGET = "target reached"


def reached_by(trials: Sequence[FrozenTrial], target: float, maximize: bool) -> FrozenTrial | None:
    """The first COMPLETE trial whose metric reached ``target``, or None.

    The target is the metric's: the first value in a study of several objectives too.
    """
    for trial in trials:
        if trial.state.name == "COMPLETE" and trial.values:
            value = trial.values[0]
            if value >= target if maximize else value <= target:
                return trial
    return None


class TargetReporter(Reporter):
    """Ends the trial after the current epoch once another trial of the study reached ``target``."""

    def __init__(self, trial: optuna.trial.Trial, metric: str, target: float, maximize: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.target = target
        self.maximize = maximize
        self.epochs = 0

    def on_start(self, info: RunInfo) -> None:
        self.epochs = info.config.train.epochs

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        # After the last epoch only the test evaluation is left: finishing gives a COMPLETE trial.
        if epoch + 1 >= self.epochs:
            return
        from optuna.trial import TrialState

        done = self.trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        winner = reached_by(done, self.target, self.maximize)
        if winner is None:
            return
        self.trial.set_user_attr(STOPPED_ATTR, STOPPED_AT_TARGET)
        raise StopRun(
            "pruned",
            f"stopped after epoch {epoch + 1}: trial {winner.number} reached the target {self.metric} {self.target:g}",
        )
