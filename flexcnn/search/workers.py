"""Workers: the trial loop of one process, and the fan-out of K worker processes.

A worker joins (or creates) the study and runs trials one after another until
the study has N finished (COMPLETE or PRUNED) trials, the metric's target is
reached, a grid is exhausted, its time is up, or it is asked to stop. Before
each trial it counts what others are running, so K workers finish N trials
rather than N + K - 1; when the rest of the budget is in other workers' hands
it waits, in case one of them fails.

Faults:

* A trial that raises or diverges is recorded FAIL with its reason and the
  worker goes on; after ``max_failures`` consecutive failures it stops with a
  message (exit code 1): a sweep whose every trial fails should not burn a
  cluster.
* SIGTERM / Ctrl-C: the current trial stops after its epoch, is recorded FAIL
  and re-queued (it resumes from its ``last.pt``), and the worker exits 0.
  A second signal interrupts at once.
* A killed worker: on RDB storages its trial stops sending heartbeats, another
  worker marks it FAIL and re-queues it. On a journal file (no heartbeats)
  workers on the same host check whether the pid that owns a RUNNING trial is
  alive, and ``flexcnn optuna run`` re-queues a dead child's trial at once and
  starts a replacement worker.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.errors import UserError
from flexcnn.search.objective import HOST, Objective, TrialSettings
from flexcnn.search.storage import MAX_RETRIES, StorageError, StorageSpec, open_storage, parse_storage
from flexcnn.search.study import StudyPlan, join_plan, open_study, output_root
from flexcnn.search.sweep_file import load_sweep

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


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


@dataclass
class WorkerReport:
    """What one worker did and why it stopped."""

    ran: Counter[str] = field(default_factory=Counter)
    reason: str = ""
    exit_code: int = 0


# --------------------------------------------------------------------------- one worker


def run_worker(opts: WorkerOptions, stop: threading.Event | None = None, say: Say = _say) -> WorkerReport:
    """Run trials in this process until the study is done, time is up or ``stop`` is set."""
    # Optuna logs every failed trial with a traceback; we print one line with the reason instead
    # (and the objective logs the traceback of a real crash itself).
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)
    stop = stop or threading.Event()
    spec = parse_storage(opts.storage)
    storage = open_storage(spec, heartbeat=opts.heartbeat if spec.has_heartbeat else None)
    sweep = load_sweep(opts.sweep_path)
    name = opts.study_name or sweep.default_study_name
    plan = join_plan(storage, name, sweep, n_trials=opts.n_trials, sampler=opts.sampler, pruner=opts.pruner)
    _check_wandb(opts.wandb_mode or plan.base_tree["logging"]["wandb"]["mode"])
    study = open_study(storage, name, plan, seed=opts.seed, worker_index=opts.worker_index)
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
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    budget, target = plan.settings.n_trials, plan.settings.target
    maximize = plan.settings.direction == "maximize"
    deadline = time.monotonic() + opts.timeout if opts.timeout else None
    failures, last_reason, waiting_said = 0, "", False
    finished: list[FrozenTrial] = []

    def remember(_: optuna.Study, trial: FrozenTrial) -> None:
        finished.append(trial)

    while True:
        if stop.is_set():
            report.reason = "asked to stop"
            break
        if deadline is not None and time.monotonic() >= deadline:
            report.reason = f"time is up ({opts.timeout:g} s)"
            break
        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state for t in trials)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= budget:
            report.reason = f"the study has {done} finished trials (budget {budget})"
            break
        if target is not None and _reached(trials, target, maximize):
            report.reason = f"a trial reached the target {plan.settings.metric} {target:g}"
            break
        if plan.settings.sampler == "grid" and study.sampler.is_exhausted(study):  # type: ignore[attr-defined]
            report.reason = "every grid point has been evaluated"
            break
        if spec.has_heartbeat:
            _fail_stale(study)
        elif reap_dead_trials(study, trials, say=say, label=opts.label):
            continue  # counts changed: a re-queued trial is waiting
        if done + counts[TrialState.RUNNING] >= budget:
            # The rest of the budget is running elsewhere; wait in case one of those trials fails.
            if not waiting_said:
                say(f"[{opts.label}] waiting: {counts[TrialState.RUNNING]} trial(s) running in other workers")
                waiting_said = True
            stop.wait(opts.poll_seconds)
            continue
        waiting_said = False
        finished.clear()
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[remember], gc_after_trial=True)
        except StorageError:
            raise
        except UpdateFinishedTrialError:
            # Another worker ended this trial as stale (missed heartbeats) and queued its copy: not a failure.
            say(f"[{opts.label}] a trial was taken over by another worker after missed heartbeats")
        except Exception as exc:  # the storage refused the result
            say(f"[{opts.label}] could not record a trial: {type(exc).__name__}: {exc}")
            failures += 1
            last_reason = str(exc)
        for trial in finished:
            report.ran[trial.state.name] += 1
            say(_trial_line(opts.label, trial, plan.settings.metric))
            if trial.state == TrialState.FAIL and trial.user_attrs.get("status") == "interrupted":
                requeue(study, trial, say=say, label=opts.label)
                stop.set()
            elif trial.state == TrialState.FAIL:
                failures += 1
                last_reason = str(trial.user_attrs.get("reason", "no reason recorded"))
            else:
                failures = 0
        if failures >= opts.max_failures:
            report.reason = (
                f"stopped after {failures} consecutive failed trials (--max-failures {opts.max_failures}); "
                f"last reason: {last_reason}"
            )
            report.exit_code = 1
            break


def _reached(trials: list[FrozenTrial], target: float, maximize: bool) -> bool:
    from optuna.trial import TrialState

    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return any(v >= target if maximize else v <= target for v in values)


def _fail_stale(study: optuna.Study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _trial_line(label: str, trial: FrozenTrial, metric: str) -> str:
    seconds = f" in {trial.duration.total_seconds():.1f} s" if trial.duration is not None else ""
    epochs = trial.user_attrs.get("epochs")
    if trial.state.name == "COMPLETE":
        best = trial.user_attrs.get("best_epoch")
        where = f" (best epoch {best}/{epochs})" if epochs else ""
        return f"[{label}] trial {trial.number} COMPLETE {metric} {trial.value:.4f}{where}{seconds}"
    if trial.state.name == "PRUNED":
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        value = trial.intermediate_values.get(last)
        shown = f" {metric} {value:.4f}" if value is not None else ""
        return f"[{label}] trial {trial.number} PRUNED at epoch {last}{shown}{seconds}"
    reason = trial.user_attrs.get("reason", "")
    return f"[{label}] trial {trial.number} {trial.state.name}{seconds}" + (f": {reason}" if reason else "")


def _check_wandb(mode: str) -> None:
    if mode == "disabled":
        return
    import importlib.util

    if importlib.util.find_spec("flexcnn.reporters.wandb") is None:
        raise UserError(f"--wandb-mode {mode}: the W&B reporter (flexcnn.reporters.wandb) is not installed")


# --------------------------------------------------------------------------- dead workers, re-queued trials


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def reap_dead_trials(
    study: optuna.Study, trials: list[FrozenTrial], *, say: Say = _say, label: str = "run", pid: int | None = None
) -> int:
    """Fail and re-queue RUNNING trials whose worker process on this host is gone; return how many.

    ``pid`` limits this to one worker (the ``run`` command knows which child died).
    """
    reaped = 0
    for trial in trials:
        if trial.state.name != "RUNNING":
            continue
        owner = trial.user_attrs.get("worker") or {}
        owner_pid = owner.get("pid")
        if owner.get("host") != HOST or not isinstance(owner_pid, int) or owner_pid == os.getpid():
            continue
        if (pid is not None and owner_pid != pid) or (pid is None and pid_alive(owner_pid)):
            continue
        reason = f"worker {owner.get('label', '?')} (pid {owner_pid}) died during the trial"
        if fail_trial(study, trial, reason):
            say(f"[{label}] trial {trial.number}: {reason}; re-queued")
            requeue(study, trial, say=say, label=label, quiet=True)
            reaped += 1
    return reaped


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with ``reason``; False when another process got there first."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    # Optuna has no public call to fail another process's trial; fail_stale_trials does the same.
    storage, trial_id = study._storage, trial._trial_id
    try:
        storage.set_trial_user_attr(trial_id, "status", "failed")
        storage.set_trial_user_attr(trial_id, "reason", reason)
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except (UpdateFinishedTrialError, RuntimeError):
        return False


def requeue(
    study: optuna.Study, trial: FrozenTrial, *, say: Say = _say, label: str = "w0", quiet: bool = False
) -> None:
    """Queue a copy of ``trial`` (same parameters; it resumes from the trial's last.pt)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRIES, inherit_intermediate_values=True
        )
        fresh = copy.deepcopy(study._storage.get_trial(trial._trial_id))  # with the attributes set since
        fresh.user_attrs.pop("worker", None)  # the copy is nobody's until a worker takes it
        retry(study, fresh)
    if not quiet:
        say(f"[{label}] trial {trial.number} re-queued; it resumes from its last checkpoint")


# --------------------------------------------------------------------------- signals


def install_stop_handlers(stop: threading.Event, say: Say = _say, label: str = "w0") -> None:
    """First SIGTERM/SIGINT: finish the epoch, record and re-queue the trial, exit. Second: interrupt now."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        say(f"[{label}] {name}: stopping after the current epoch (again to interrupt now)")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------- K processes


def worker_command(opts: WorkerOptions, index: int, timeout: float | None) -> list[str]:
    """The command line that starts worker ``index`` as its own process."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from flexcnn.cli import main; main(sys.argv[1:])",
        "optuna",
        "worker",
        str(opts.sweep_path),
        "--worker-index",
        str(index),
        "--label",
        f"w{index}",
        "--max-failures",
        str(opts.max_failures),
        "--heartbeat",
        str(opts.heartbeat),
    ]
    for flag, value in (
        ("--study", opts.study_name),
        ("--storage", opts.storage),
        ("--n-trials", opts.n_trials),
        ("--sampler", opts.sampler),
        ("--pruner", opts.pruner),
        ("--wandb-mode", opts.wandb_mode),
        ("--threads", opts.threads),
        ("--seed", opts.seed),
        ("--timeout", timeout),
        ("--output-dir", opts.output_dir),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_workers(opts: WorkerOptions, workers: int, study: optuna.Study, say: Say = _say) -> int:
    """Start ``workers`` worker processes and supervise them; return the exit code for ``run``.

    Each child runs in its own session, so a Ctrl-C reaches only this process,
    which then asks every child once (SIGTERM) to stop after its epoch. A child
    killed by a signal has its trial re-queued and is replaced (up to
    ``workers`` times in all).
    """
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if opts.threads is not None:
        # Thread count for torch/numpy in the children, and passive OpenMP waits so
        # workers sharing cores do not spin on each other's time.
        from flexcnn.hardware import worker_env

        env.update(worker_env(opts.threads))

    def spawn(index: int) -> subprocess.Popen[bytes]:
        timeout = None if opts.timeout is None else max(1.0, opts.timeout - (time.monotonic() - started))
        return subprocess.Popen(worker_command(opts, index, timeout), env=env, start_new_session=True)

    procs = {k: spawn(k) for k in range(workers)}
    say(f"[run] started {workers} worker process(es): " + ", ".join(f"w{k}=pid {p.pid}" for k, p in procs.items()))
    signals_seen = 0

    def forward(signum: int, _frame: Any) -> None:
        nonlocal signals_seen
        signals_seen += 1
        how = signal.SIGTERM if signals_seen == 1 else signal.SIGINT
        if signals_seen == 1:
            say("[run] stopping: each worker finishes its epoch, records and re-queues its trial (again to interrupt)")
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(how)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    respawns, exit_codes = workers, []
    try:
        while procs:
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[index]
                exit_codes.append(code)
                if code >= 0:
                    continue
                name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                say(f"[run] worker w{index} (pid {proc.pid}) was killed by {name}")
                reap_dead_trials(study, study.get_trials(deepcopy=False), say=say, pid=proc.pid)
                if signals_seen == 0 and respawns > 0 and not _study_done(study, opts):
                    respawns -= 1
                    procs[index] = spawn(index)
                    say(f"[run] replaced w{index} with pid {procs[index].pid}")
            time.sleep(0.3)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signals_seen:
        return 130
    return 0 if all(c == 0 for c in exit_codes if c >= 0) else 1


def _study_done(study: optuna.Study, opts: WorkerOptions) -> bool:
    from flexcnn.search.study import state_counts, stored_settings

    settings = stored_settings(study)
    budget = opts.n_trials or (settings.n_trials if settings else None)
    counts = state_counts(study)
    return budget is not None and counts["COMPLETE"] + counts["PRUNED"] >= budget


def describe_storage(spec: StorageSpec) -> str:
    return spec.display if spec.kind == "rdb" else f"journal file {spec.url}"
