"""One Optuna trial = one ``run()`` of the base config with the trial's parameters.

The trial records what it needs to be found, resumed and reproduced later, as
user attributes: ``trial`` (its number; copied into a re-queued trial, so the
copy knows which run it continues), ``params`` (decoded dotted overrides),
``config`` (the full resolved config), ``run_dir``, ``worker`` (host, pid,
label), and at the end ``status``, ``reason``, ``epochs``, ``best_epoch`` and a
few summary figures (``summary``, a mapping). The same figures are also flat,
numeric attributes that optuna-dashboard can sort and filter, as W&B's run
table does: ``test/acc``, ``test/f1_macro`` and the other scalar test metrics,
``params/trainable``, ``params/total``, ``latency_ms``. A trial that finished
well uploads its ``confusion.png`` and ``best.pt`` as Optuna artifacts.

Outcomes: completed or early-stopped -> the best value of the metric over the
epochs (what best.pt holds), and in a study of several objectives the other
objectives' values after it (parameters, latency); pruned, or stopped because another trial reached the study's target
(flexcnn.search.target) -> ``optuna.TrialPruned``; a NaN loss, an
invalid parameter combination or any other exception -> ``TrialFailed`` (Optuna
records FAIL and the worker goes on); stopped by the worker (SIGTERM/Ctrl-C)
-> ``WorkerStopping``, recorded FAIL and re-queued by the worker.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from flexcnn.config import RunConfig, validate_config
from flexcnn.errors import CheckpointError, RunFailed, TrainingDiverged, UserError
from flexcnn.overrides import apply_overrides
from flexcnn.reporters import ReporterContext, build_reporters
from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun
from flexcnn.search.artifacts import upload_trial_files
from flexcnn.search.objectives import ObjectiveSpec, objective_values
from flexcnn.search.space import SearchSpace, format_value
from flexcnn.search.storage import StorageError
from flexcnn.search.target import TargetReporter

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore

log = logging.getLogger(__name__)
HOST = socket.gethostname()
SUMMARY_KEYS = ("test/acc", "test/f1_macro", "val/acc", "best/val/acc", "seconds")
# Copied from the run's summary as flat trial attributes (the evaluated split's scalars come too).
FLAT_KEYS = {
    "params/trainable": "params/trainable",
    "params/total": "params/total",
    "latency_ms": "latency_ms_per_image",
}


class TrialFailed(Exception):
    """The trial could not produce a value: a NaN loss, an invalid config, a crash; the reason says which."""


class WorkerStopping(Exception):
    """The worker was asked to stop (SIGTERM, Ctrl-C) and cut the trial short after an epoch."""


class ProgressReporter(Reporter):
    """A study of several objectives cannot ``trial.report``: record the epochs done instead.

    The write also notices a trial another worker has taken over (missed heartbeats), as
    ``trial.report`` does for a single objective, and stops the run.
    """

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self.trial = trial

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.trial.set_user_attr("epochs", epoch + 1)
        except UpdateFinishedTrialError:
            reason = f"trial was ended elsewhere (missed heartbeats) at epoch {epoch + 1}"
            raise StopRun("interrupted", reason) from None


class StopFlagReporter(Reporter):
    """Ends the run after the current epoch once ``flag`` is set (the worker was asked to stop)."""

    def __init__(self, flag: threading.Event) -> None:
        self.flag = flag
        self.epochs = 0

    def on_start(self, info: RunInfo) -> None:
        self.epochs = info.config.train.epochs

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        # After the last epoch only the test evaluation is left: finishing beats re-queueing.
        if self.flag.is_set() and epoch + 1 < self.epochs:
            raise StopRun("interrupted", f"worker asked to stop after epoch {epoch + 1}")


@dataclass
class TrialSettings:
    """What every trial of one worker shares."""

    study_name: str
    metric: str
    base_tree: dict[str, Any]
    space: SearchSpace
    output_root: Path  # trial folders go in output_root/trial-<n>
    label: str = "w0"
    threads: int | None = None
    wandb_mode: str | None = None  # None: the config's logging.wandb.mode
    stop: threading.Event = field(default_factory=threading.Event)
    objectives: tuple[ObjectiveSpec, ...] = ()  # () or one: the metric alone
    artifacts: ArtifactStore | None = None
    target: float | None = None  # the metric's target: trials stop once another reached it
    maximize: bool = True  # the metric's direction, for the target

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


class Objective:
    """Callable for ``study.optimize``: builds the trial's config, trains it, returns the metric."""

    def __init__(self, settings: TrialSettings, say: Any = print) -> None:
        self.settings = settings
        self.say = say

    def __call__(self, trial: optuna.trial.Trial) -> float | tuple[float, ...]:
        import optuna

        s = self.settings
        # Owner first: until this is written, a re-queued copy still names the dead worker it came from.
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid(), "label": s.label})
        inherited = dict(trial.user_attrs)  # more than "worker" only for a re-queued copy of an earlier trial
        retry_of = inherited.get("trial")
        trial.set_user_attr("trial", trial.number)
        params = s.space.suggest(trial)
        trial.set_user_attr("params", params)
        shown = "  ".join(f"{k}={format_value(v)}" for k, v in params.items())
        again = f" (re-run of trial {retry_of})" if retry_of is not None else ""
        self.say(f"[{s.label}] trial {trial.number} start{again}: {shown}")

        try:
            config = self.trial_config(params)
        except UserError as exc:
            self._fail(trial, f"invalid parameter combination: {exc}")
        trial.set_user_attr("config", config.to_dict())

        run_dir, resume = self._run_dir(trial, inherited)
        trial.set_user_attr("run_dir", str(run_dir))
        reporters = self._reporters(trial, config, params, retry_of)
        try:
            result = self._run(config, reporters, run_dir, resume, trial.number)
        except TrainingDiverged as exc:
            self._fail(trial, f"training diverged: {exc}")
        except RunFailed as exc:  # out of memory, disk full: the message says what to change
            self._fail(trial, str(exc))
        except StorageError:
            raise  # the study's storage is gone: nothing to record there; the worker stops
        except UserError as exc:
            self._fail(trial, str(exc))
        except Exception as exc:
            log.exception("trial %s crashed", trial.number)
            self._fail(trial, f"{type(exc).__name__}: {exc}")

        self._record(trial, result)
        if result.status == "pruned":
            raise optuna.TrialPruned(result.reason)
        if result.status == "interrupted":
            raise WorkerStopping(result.reason or "interrupted")
        if not result.ok or result.best_value is None:
            self._fail(trial, result.reason or f"run ended with status {result.status}")
        if s.artifacts is not None:
            upload_trial_files(trial, result.run_dir, s.artifacts)
        if not s.multi:
            return float(result.best_value)
        values = objective_values(s.objectives, result.best_value, result.summary)
        if isinstance(values, str):
            self._fail(trial, values)
        return values

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        """The base config with ``params`` applied, monitoring the study's metric."""
        s = self.settings
        tree = apply_overrides(s.base_tree, params)
        tree.setdefault("train", {})["monitor"] = s.metric
        tree.setdefault("logging", {})["progress"] = False
        if s.threads is not None and tree["train"].get("threads") is None:
            tree["train"]["threads"] = s.threads
        return validate_config(tree, source="trial config")

    def _run_dir(self, trial: optuna.trial.Trial, inherited: Mapping[str, Any]) -> tuple[Path, bool]:
        """A re-queued trial continues its predecessor's folder from last.pt; others start fresh."""
        previous = inherited.get("run_dir")
        if previous and (Path(previous) / "last.pt").is_file():
            trial.set_user_attr("resumed_from", previous)
            return Path(previous), True
        if "resumed_from" in inherited:
            trial.set_user_attr("resumed_from", None)  # copied from the predecessor; not true of this run
        return self.settings.output_root / f"trial-{trial.number}", False

    def _reporters(
        self, trial: optuna.trial.Trial, config: RunConfig, params: Mapping[str, Any], retry_of: Any
    ) -> list[Reporter]:
        s = self.settings
        extra: dict[str, Any] = {"study": s.study_name, "trial": trial.number, "params": dict(params)}
        if retry_of is not None:
            extra["retry_of"] = retry_of
        context = ReporterContext(
            config,
            console=False,  # the worker prints one line per trial instead
            wandb_mode=s.wandb_mode,  # None: the config's logging.wandb.mode decides
            wandb_group=s.study_name,
            wandb_name=f"{s.study_name}-trial-{trial.number}",
            wandb_tags=("optuna",),
            wandb_extra_config={"optuna": extra},
            trial=None if s.multi else trial,  # the pruning reporter: Optuna prunes single objectives only
            metric=s.metric,
        )
        progress = [ProgressReporter(trial)] if s.multi else []
        if s.target is not None:
            progress.append(TargetReporter(trial, s.metric, s.target, s.maximize))
        return [*build_reporters(context), *progress, StopFlagReporter(s.stop)]

    def _run(self, config: RunConfig, reporters: list[Reporter], run_dir: Path, resume: bool, number: int) -> RunResult:
        from flexcnn.run import run

        try:
            return run(config, reporters, run_dir=run_dir, resume=resume)
        except CheckpointError as exc:
            if not resume:
                raise
            # A torn or foreign checkpoint: start over in this trial's own folder.
            log.warning("cannot resume %s (%s); training from epoch 0", run_dir, exc)
            return run(config, reporters, run_dir=self.settings.output_root / f"trial-{number}")

    def _record(self, trial: optuna.trial.Trial, result: RunResult) -> None:
        summary = {k: result.summary[k] for k in SUMMARY_KEYS if isinstance(result.summary.get(k), int | float)}
        _set_attrs(
            trial,
            status=result.status,
            reason=result.reason or None,
            epochs=int(result.history[-1]["epoch"]) if result.history else 0,
            best_epoch=result.best_epoch,
            summary=summary,
            **flat_attrs(result),
        )

    def _fail(self, trial: optuna.trial.Trial, reason: str) -> NoReturn:
        _set_attrs(trial, status="failed", reason=reason)
        raise TrialFailed(reason)


def flat_attrs(result: RunResult) -> dict[str, float]:
    """Numeric attributes the dashboard can sort: the evaluated split's scalars, parameters, latency.

    ``test/acc`` etc. (``val/...`` when the data have no test split); per-class figures stay
    in the run folder. Missing or non-finite figures are left out rather than stored as text.
    """
    prefix = f"{result.eval_split}/"
    picked = {k: v for k, v in result.summary.items() if k.startswith(prefix) and k.count("/") == 1}
    picked.update({name: result.summary[key] for name, key in FLAT_KEYS.items() if key in result.summary})
    return {
        k: v for k, v in picked.items() if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _set_attrs(trial: optuna.trial.Trial, **attrs: Any) -> None:
    """Record outcome attributes; a trial another worker already ended (stale) keeps its own."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except UpdateFinishedTrialError:
        log.warning("trial %s was ended by another worker meanwhile; its outcome here is not recorded", trial.number)
