"""The ``flexcnn optuna worker`` command line, for whoever starts workers as processes.

``flexcnn optuna run`` starts K of them on this machine; ``flexcnn agent optuna``
one per GPU. Both run the current interpreter (``python -m flexcnn``), so a
child uses the same installation as its parent, inside or outside a container.
This module imports nothing heavy: the agent launcher imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# What every `--storage` option also reads. Launchers hand the URL to their workers in it, never on
# the command line: any user on the machine can read a process's argv (ps), and a PostgreSQL URL
# may hold a password.
STORAGE_ENV = "FLEXCNN_STORAGE"


def storage_env(storage: str | None) -> dict[str, str]:
    """The environment that gives a ``flexcnn optuna worker`` its storage (none: the worker's default)."""
    return {STORAGE_ENV: storage} if storage else {}


def flexcnn_argv(*args: str) -> list[str]:
    """``flexcnn ARGS`` run by the current interpreter."""
    return [sys.executable, "-m", "flexcnn", *args]


def optuna_worker_argv(
    sweep: Path | str,
    *,
    study: str | None = None,
    n_trials: int | None = None,
    threads: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    wandb_mode: str | None = None,
    seed: int | None = None,
    timeout: float | None = None,
    output_dir: Path | str | None = None,
    max_failures: int | None = None,
    heartbeat: int | None = None,
    worker_index: int | None = None,
    label: str | None = None,
    objectives: Sequence[str] = (),
    artifacts: str | None = None,
) -> list[str]:
    """The command line of one ``flexcnn optuna worker SWEEP``; an option left None (or "") is the worker's default.

    No storage: it travels in the environment (:func:`storage_env`).
    """
    options = (
        ("--study", study),
        ("--n-trials", n_trials),
        ("--threads", threads),
        ("--sampler", sampler),
        ("--pruner", pruner),
        ("--wandb-mode", wandb_mode),
        ("--seed", seed),
        ("--timeout", timeout),
        ("--output-dir", output_dir),
        ("--max-failures", max_failures),
        ("--heartbeat", heartbeat),
        ("--worker-index", worker_index),
        ("--label", label),
        ("--artifacts", artifacts),
        *(("--objective", objective) for objective in objectives),
    )
    argv = flexcnn_argv("optuna", "worker", str(sweep))
    for flag, value in options:
        if value is not None and value != "":
            argv += [flag, str(value)]
    return argv
