"""What each agent child runs and with which environment.

The children are started with this interpreter (``python -m wandb``, and
``python -m flexcnn`` from :mod:`flexcnn.search.worker_argv`) so they use the
same installation as the parent, inside or outside a container.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from flexcnn.processes import ChildSpec
from flexcnn.secret_files import resolve_secret_files


def wandb_agent_argv(sweep_id: str, *, count: int | None) -> list[str]:
    """The ``wandb agent`` command line one W&B agent runs.

    ``--forward-signals``: wandb starts each run in a process group of its own, so
    the SIGTERM (and SIGINT) the supervisor sends the agent reaches ``flexcnn train``
    only when the agent forwards it; the run then checkpoints, marks itself
    preempting and W&B requeues it.
    """
    argv = [sys.executable, "-m", "wandb", "agent", "--forward-signals"]
    if count is not None:
        argv += ["--count", str(count)]
    return [*argv, sweep_id]


def slot_name(gpu: str) -> str:
    """A short log prefix: ``gpu0``, or the start of a GPU/MIG UUID."""
    return f"gpu{gpu}" if gpu.isdigit() else re.sub(r"[^0-9A-Za-z-]", "", gpu)[:12]


def child_env(base: Mapping[str, str], gpu: str, slot: int) -> dict[str, str]:
    """``base`` plus what pins a child to one GPU and keeps its output prompt."""
    env = dict(base)
    env["CUDA_VISIBLE_DEVICES"] = gpu
    # nvidia-smi numbers GPUs by PCI bus; CUDA's default (fastest first) may differ.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixed log as they are printed
    env["FLEXCNN_AGENT_SLOT"] = str(slot)
    # Agents share the host's cores: idle OpenMP threads should sleep, not spin (README, "Speed").
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The sweep's `command` calls `flexcnn`; make sure it is this installation's.
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bindir, path]) if path else bindir
    return env


def agent_specs(argv: Sequence[str], gpus: Sequence[str], env: Mapping[str, str] | None = None) -> list[ChildSpec]:
    """One :class:`ChildSpec` per GPU, all running ``argv``."""
    base = resolve_secret_files(os.environ if env is None else env)
    shared = {gpu for gpu in gpus if list(gpus).count(gpu) > 1}
    seen: dict[str, int] = {}
    specs = []
    for slot, gpu in enumerate(gpus):
        seen[gpu] = seen.get(gpu, -1) + 1
        # Several agents on one GPU (--trials-per-gpu) get distinct names: gpu0.0, gpu0.1, ...
        name = f"{slot_name(gpu)}.{seen[gpu]}" if gpu in shared else slot_name(gpu)
        specs.append(ChildSpec(name=name, argv=tuple(argv), env=child_env(base, gpu, slot)))
    return specs
