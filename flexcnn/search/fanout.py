"""``flexcnn optuna run``'s K worker processes on this machine, under one supervisor.

The children are ``flexcnn optuna worker`` processes sharing this terminal
(each prefixes its own lines with ``[wK]``). The first SIGTERM or Ctrl-C asks
every child to finish its epoch, record and re-queue its trial; a second one
interrupts them. A child killed by a signal has its RUNNING trial failed and
re-queued at once (a journal file has no heartbeats to notice) and is
replaced while the study is not done, up to K replacements in all.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from flexcnn.exit_codes import EXIT_STOPPED
from flexcnn.hardware import worker_env
from flexcnn.processes import ChildExit, ChildSpec, RestartPolicy, StopRequest, StopStep, Supervisor, SupervisorHooks
from flexcnn.search.reaping import reap_dead_trials
from flexcnn.search.say import Say, print_line
from flexcnn.search.study import state_counts, stored_settings
from flexcnn.search.worker_argv import optuna_worker_argv, storage_env
from flexcnn.search.workers import WorkerOptions

if TYPE_CHECKING:
    import optuna

# A worker records and re-queues its trial on SIGTERM and stops at once on SIGINT; it is never killed.
FINISH_THEN_INTERRUPT = (StopStep(signal.SIGTERM, group=False), StopStep(signal.SIGINT, group=False))


def run_workers(opts: WorkerOptions, workers: int, study: optuna.Study, say: Say = print_line) -> int:
    """Start ``workers`` worker processes and supervise them; return the exit code for ``run``.

    0 when every worker ended well, 1 when one exited with an error (its
    ``--max-failures``), 130 when this process was asked to stop.
    """
    started = time.monotonic()
    env = children_env(opts)
    report = Supervisor(
        [_worker_spec(opts, index, env, started) for index in range(workers)],
        policy=RestartPolicy(max_restarts=workers, delay=0.0, only_killed=True, shared=True),
        ladder=FINISH_THEN_INTERRUPT,
        signals=(signal.SIGINT, signal.SIGTERM),
        prefix_output=False,
        poll_interval=0.3,
        hooks=_RunLines(study, opts, say),
    ).run()
    if report.stop_level:
        return 130
    # A killed worker is not a failed one: its trial was re-queued and others finished the study.
    # Nor is one stopped by a signal of its own (EXIT_STOPPED): it re-queued its trial itself.
    codes = [code for slot in report.slots for code in slot.exit_codes if code >= 0 and code != EXIT_STOPPED]
    return 0 if all(code == 0 for code in codes) else 1


def children_env(opts: WorkerOptions, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The workers' environment: ours, the storage URL (never their argv) and their thread budget."""
    env = {**(os.environ if base is None else base), "PYTHONUNBUFFERED": "1", **storage_env(opts.storage)}
    if opts.threads is not None:
        env.update(worker_env(opts.threads))
    return env


def _worker_spec(opts: WorkerOptions, index: int, env: Mapping[str, str], started: float) -> ChildSpec:
    def argv() -> list[str]:
        # A replacement gets what is left of --timeout, not all of it again.
        timeout = None if opts.timeout is None else max(1.0, opts.timeout - (time.monotonic() - started))
        return optuna_worker_argv(
            opts.sweep_path,
            study=opts.study_name,
            n_trials=opts.n_trials,
            threads=opts.threads,
            sampler=opts.sampler,
            pruner=opts.pruner,
            wandb_mode=opts.wandb_mode,
            seed=opts.seed,
            timeout=timeout,
            output_dir=opts.output_dir,
            max_failures=opts.max_failures,
            heartbeat=opts.heartbeat,
            worker_index=index,
            label=f"w{index}",
            objectives=opts.objectives,
            artifacts=opts.artifacts,
        )

    return ChildSpec(name=f"w{index}", argv=argv(), env=env, argv_at_start=argv)


class _RunLines(SupervisorHooks):
    """``[run] ...`` lines, and a killed worker's trial re-queued before anyone replaces it."""

    def __init__(self, study: optuna.Study, opts: WorkerOptions, say: Say) -> None:
        self.study, self.opts, self.say = study, opts, say

    def launched(self, pids: Mapping[str, int]) -> None:
        shown = ", ".join(f"{name}=pid {pid}" for name, pid in pids.items())
        self.say(f"[run] started {len(pids)} worker process(es): {shown}")

    def started(self, spec: ChildSpec, pid: int, argv: Sequence[str], *, first: bool) -> None:
        if not first:
            self.say(f"[run] replaced {spec.name} with pid {pid}")

    def exited(self, event: ChildExit) -> None:
        if event.code >= 0 or event.pid is None:
            return
        number = -event.code
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        self.say(f"[run] worker {event.name} (pid {event.pid}) was killed by {name}")
        reap_dead_trials(self.study, self.study.get_trials(deepcopy=False), say=self.say, pid=event.pid)

    def may_restart(self, name: str, code: int) -> bool:
        return not _study_done(self.study, self.opts)

    def stopping(self, request: StopRequest) -> None:
        if request.level == 1:
            self.say(
                "[run] stopping: each worker finishes its epoch, records and re-queues its trial (again to interrupt)"
            )


def _study_done(study: optuna.Study, opts: WorkerOptions) -> bool:
    settings = stored_settings(study)
    budget = opts.n_trials or (settings.n_trials if settings else None)
    counts = state_counts(study)
    return budget is not None and counts["COMPLETE"] + counts["PRUNED"] >= budget
