"""A worker: the trial loop of one process (``flexcnn optuna worker``).

A worker joins (or creates) the study and runs trials one after another until
the study has N finished (COMPLETE or PRUNED) trials, the metric's target is
reached, a grid is exhausted, its time is up, or it is asked to stop. It starts
a trial only while finished + running trials leave room in the budget, counted
and claimed atomically across workers (:mod:`flexcnn.search.claims`), so K
workers finish exactly N trials; when the rest of the budget is in other
workers' hands it waits, in case one of them fails.

Faults:

* A trial that raises or diverges is recorded FAIL with its reason and the
  worker goes on; after ``max_failures`` consecutive failures it stops with a
  message (exit code 1): a sweep whose every trial fails should not burn a
  cluster.
* SIGTERM / Ctrl-C: the current trial stops after its epoch, is recorded FAIL
  and re-queued (it resumes from its ``last.pt``), and the worker exits 75
  (:data:`~flexcnn.exit_codes.EXIT_STOPPED`: start me again), or 0 when the
  study is finished anyway. A second signal interrupts at once.
* A killed worker: its trial is failed and re-queued by another worker
  (:mod:`flexcnn.search.reaping`), and ``flexcnn optuna run`` starts a
  replacement (:mod:`flexcnn.search.fanout`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.errors import UserError
from flexcnn.exit_codes import EXIT_STOPPED
from flexcnn.search.artifacts import artifact_target
from flexcnn.search.claims import BudgetFull, budgeted_study
from flexcnn.search.leaderboard import format_objective
from flexcnn.search.objective import Objective, TrialSettings
from flexcnn.search.reaping import recover_lost_trials, requeue
from flexcnn.search.say import Say, print_line
from flexcnn.search.storage import StorageError, StorageSpec, open_storage, parse_storage
from flexcnn.search.study import StudyPlan, join_plan, open_study, output_root
from flexcnn.search.sweep_file import load_sweep
from flexcnn.search.target import STOPPED_ATTR, reached_by

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from flexcnn.search.sweep_file import SweepSpec


@dataclass
class WorkerOptions:
    """Everything ``flexcnn optuna worker`` takes on its command line."""

    sweep_path: Path
    study_name: str | None = None
    storage: str | None = None
    n_trials: int | None = None
    sampler: str | None = None
    pruner: str | None = None
    wandb_mode: str | None = None
    threads: int | None = None
    seed: int | None = None
    worker_index: int = 0
    label: str = "w0"
    max_failures: int = 5
    heartbeat: int = 30
    timeout: float | None = None
    output_dir: Path | None = None
    poll_seconds: float = 1.0
    objectives: tuple[str, ...] = ()  # --objective NAME:GOAL, repeated; () -> the sweep file's
    artifacts: str | None = None  # --artifacts DIR | s3://BUCKET | none; None -> next to the storage


@dataclass
class WorkerReport:
    """What one worker did and why it stopped."""

    ran: Counter[str] = field(default_factory=Counter)
    reason: str = ""
    exit_code: int = 0


@dataclass
class _FailureStreak:
    """Consecutive failed trials, and the last one's reason, for ``--max-failures``."""

    count: int = 0
    last_reason: str = ""

    def failed(self, reason: str) -> None:
        self.count += 1
        self.last_reason = reason


def worker_plan(storage: BaseStorage, name: str, sweep: SweepSpec, opts: WorkerOptions) -> StudyPlan:
    """The study's plan for ``sweep``, with the budget, sampler, pruner and objectives ``opts`` override."""
    return join_plan(
        storage,
        name,
        sweep,
        n_trials=opts.n_trials,
        sampler=opts.sampler,
        pruner=opts.pruner,
        objectives=opts.objectives or None,
    )


def run_worker(
    opts: WorkerOptions, stop: threading.Event | None = None, say: Say = print_line, *, notices: bool = False
) -> WorkerReport:
    """Run trials in this process until the study is done, time is up or ``stop`` is set.

    ``notices``: say the plan's notices (pruning turned off for several objectives) first.
    """
    # Optuna logs every failed trial with a traceback; we print one line with the reason instead
    # (and the objective logs the traceback of a real crash itself).
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)
    stop = stop or threading.Event()
    spec = parse_storage(opts.storage)
    storage = open_storage(spec, heartbeat=opts.heartbeat if spec.has_heartbeat else None)
    sweep = load_sweep(opts.sweep_path)
    name = opts.study_name or sweep.default_study_name
    plan = worker_plan(storage, name, sweep, opts)
    _check_wandb(opts.wandb_mode or plan.base_tree["logging"]["wandb"]["mode"])
    artifacts = artifact_target(opts.artifacts, spec).open()
    for notice in plan.notices if notices else []:
        say(f"[{opts.label}] {notice}")
    study = open_study(storage, name, plan, seed=opts.seed, worker_index=opts.worker_index)
    study = budgeted_study(study, storage, plan.settings.n_trials)
    settings = TrialSettings(
        study_name=name,
        metric=plan.settings.metric,
        base_tree=plan.base_tree,
        space=plan.space,
        output_root=output_root(plan, name, opts.output_dir),
        label=opts.label,
        threads=opts.threads,
        wandb_mode=opts.wandb_mode,
        stop=stop,
        objectives=plan.settings.specs,
        artifacts=artifacts,
        target=plan.settings.target,
        maximize=plan.settings.direction == "maximize",
    )
    objective = Objective(settings, say=say)
    import flexcnn.run  # noqa: F401  the training stack, now rather than inside the first trial's clock

    report = WorkerReport()
    try:
        _loop(study, plan, spec, objective, opts, stop, say, report)
    except StorageError as exc:  # the database stayed away longer than the storage waits for it
        report.reason, report.exit_code = str(exc), 1
    return report


def _loop(
    study: optuna.Study,
    plan: StudyPlan,
    spec: StorageSpec,
    objective: Objective,
    opts: WorkerOptions,
    stop: threading.Event,
    say: Say,
    report: WorkerReport,
) -> None:
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    streak, waiting_said = _FailureStreak(), False
    while True:
        if stop.is_set():
            _stopped(study, plan, report)
            return
        if deadline is not None and time.monotonic() >= deadline:
            report.reason = f"time is up ({opts.timeout:g} s)"
            return
        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        done = counts["COMPLETE"] + counts["PRUNED"]
        report.reason = _study_over(study, plan, trials, done)
        if report.reason:
            return
        if recover_lost_trials(study, trials, heartbeat=spec.has_heartbeat, say=say, label=opts.label):
            continue  # counts changed: a re-queued trial is waiting
        if done + counts["RUNNING"] >= plan.settings.n_trials:
            # The rest of the budget is running elsewhere; wait in case one of those trials fails.
            if not waiting_said:
                say(f"[{opts.label}] waiting: {counts['RUNNING']} trial(s) running in other workers")
                waiting_said = True
            stop.wait(opts.poll_seconds)
            continue
        waiting_said = False
        try:
            _run_one_trial(study, objective, plan.settings.metric, opts.label, stop, say, report, streak)
        except BudgetFull:  # another worker took the last place since we counted: wait like above
            stop.wait(opts.poll_seconds)
            continue
        if streak.count >= opts.max_failures:
            report.reason = (
                f"stopped after {streak.count} consecutive failed trials (--max-failures {opts.max_failures}); "
                f"last reason: {streak.last_reason}"
            )
            report.exit_code = 1
            return


def _stopped(study: optuna.Study, plan: StudyPlan, report: WorkerReport) -> None:
    """Asked to stop: exit 0 if the study is finished anyway, else EXIT_STOPPED (start me again)."""
    trials = study.get_trials(deepcopy=False)
    over = _study_over(study, plan, trials, sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials))
    report.reason = f"asked to stop; {over}" if over else "asked to stop before the study was finished"
    report.exit_code = 0 if over else EXIT_STOPPED


def _study_over(study: optuna.Study, plan: StudyPlan, trials: list[FrozenTrial], done: int) -> str:
    """Why no worker should start another trial, or "" while one should."""
    budget, target = plan.settings.n_trials, plan.settings.target
    if done >= budget:
        return f"the study has {done} finished trials (budget {budget})"
    if target is not None and _reached(trials, target, plan.settings.direction == "maximize"):
        return f"a trial reached the target {plan.settings.metric} {target:g}"
    if plan.settings.sampler == "grid" and study.sampler.is_exhausted(study):  # type: ignore[attr-defined]
        return "every grid point has been evaluated"
    return ""


def _run_one_trial(
    study: optuna.Study,
    objective: Objective,
    metric: str,
    label: str,
    stop: threading.Event,
    say: Say,
    report: WorkerReport,
    streak: _FailureStreak,
) -> None:
    """One ``study.optimize`` step: run a trial, say how it ended, re-queue it when this worker was stopped."""
    from optuna.exceptions import UpdateFinishedTrialError

    finished: list[FrozenTrial] = []
    try:
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),
            callbacks=[lambda _study, trial: finished.append(trial)],
            gc_after_trial=True,
        )
    except (StorageError, BudgetFull):
        raise
    except UpdateFinishedTrialError:
        # Another worker ended this trial as stale (missed heartbeats) and queued its copy: not a failure.
        say(f"[{label}] a trial was taken over by another worker after missed heartbeats")
    except Exception as exc:  # the storage refused the result
        say(f"[{label}] could not record a trial: {type(exc).__name__}: {exc}")
        streak.failed(str(exc))
    for trial in finished:
        report.ran[trial.state.name] += 1
        say(_trial_line(label, trial, metric, [o.name for o in objective.settings.objectives[1:]]))
        if trial.state.name == "FAIL" and trial.user_attrs.get("status") == "interrupted":
            requeue(study, trial, say=say, label=label)
            stop.set()
        elif trial.state.name == "FAIL":
            streak.failed(str(trial.user_attrs.get("reason", "no reason recorded")))
        else:
            streak.count = 0


def _reached(trials: list[FrozenTrial], target: float, maximize: bool) -> bool:
    return reached_by(trials, target, maximize) is not None


def _trial_line(label: str, trial: FrozenTrial, metric: str, others: list[str] | None = None) -> str:
    seconds = f" in {trial.duration.total_seconds():.1f} s" if trial.duration is not None else ""
    epochs = trial.user_attrs.get("epochs")
    if trial.state.name == "COMPLETE":
        best = trial.user_attrs.get("best_epoch")
        where = f" (best epoch {best}/{epochs})" if epochs else ""
        extra = "".join(f", {n} {format_objective(v)}" for n, v in zip(others or [], trial.values[1:], strict=False))
        return f"[{label}] trial {trial.number} COMPLETE {metric} {trial.values[0]:.4f}{extra}{where}{seconds}"
    if trial.state.name == "PRUNED":
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        value = trial.intermediate_values.get(last)
        shown = f" {metric} {value:.4f}" if value is not None else ""
        why = f" (stopped: {trial.user_attrs[STOPPED_ATTR]})" if STOPPED_ATTR in trial.user_attrs else ""
        return f"[{label}] trial {trial.number} PRUNED at epoch {last}{shown}{seconds}{why}"
    reason = trial.user_attrs.get("reason", "")
    return f"[{label}] trial {trial.number} {trial.state.name}{seconds}" + (f": {reason}" if reason else "")


def _check_wandb(mode: str) -> None:
    if mode == "disabled":
        return
    import importlib.util

    if importlib.util.find_spec("flexcnn.reporters.wandb") is None:
        raise UserError(f"--wandb-mode {mode}: the W&B reporter (flexcnn.reporters.wandb) is not installed")


def install_stop_handlers(stop: threading.Event, say: Say = print_line, label: str = "w0") -> None:
    """First SIGTERM/SIGINT: finish the epoch, record and re-queue the trial, exit. Second: interrupt now."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        say(f"[{label}] {name}: stopping after the current epoch (again to interrupt now)")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
