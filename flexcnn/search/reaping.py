"""Trials whose worker is gone: fail them and queue a copy that resumes from their checkpoint.

RDB storages have heartbeats: a trial silent for the grace period is failed
by whichever worker looks next, and the storage's retry callback queues its
copy. A journal file has none, so workers on the same host check whether the
pid that owns a RUNNING trial is still alive, and ``flexcnn optuna run``
reaps a child it saw die at once.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from flexcnn.search.objective import HOST
from flexcnn.search.say import Say
from flexcnn.search.storage import MAX_RETRIES

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def recover_lost_trials(
    study: optuna.Study, trials: list[FrozenTrial], *, heartbeat: bool, say: Say, label: str
) -> int:
    """Fail and re-queue RUNNING trials whose worker died, the way this storage can tell.

    Returns how many this process re-queued itself: on a heartbeat storage
    the storage's own callback queues the copies, and this returns 0.
    """
    if heartbeat:
        fail_stale_trials(study)
        return 0
    return reap_dead_trials(study, trials, say=say, label=label)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat stopped; the storage's callback re-queues them."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
    study: optuna.Study, trials: list[FrozenTrial], *, say: Say, label: str = "run", pid: int | None = None
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


def requeue(study: optuna.Study, trial: FrozenTrial, *, say: Say, label: str = "w0", quiet: bool = False) -> None:
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
