"""Which GPUs an agent may use: parse ``--gpus`` and discover the visible devices.

Discovery never initialises CUDA in the parent (it only launches children):
``CUDA_VISIBLE_DEVICES`` wins when set, then ``nvidia-smi`` (mounted into
containers by the NVIDIA Container Toolkit), then torch as a last resort.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flexcnn.errors import UserError

# An index ("0"), a GPU UUID ("GPU-8f..."), or a MIG instance ("MIG-..."): what CUDA_VISIBLE_DEVICES accepts.
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


class NoGPUError(UserError):
    """No GPU is visible and CPU mode was not asked for."""


@dataclass(frozen=True)
class Discovery:
    """The GPUs this process may hand out and how we learned that (for error messages)."""

    ids: tuple[str, ...]
    source: str


def parse_gpu_spec(spec: str) -> list[str] | None:
    """``"all"`` -> None (every visible GPU); ``"0,1,3"`` -> ``["0", "1", "3"]``."""
    text = spec.strip()
    if text.lower() == "all":
        return None
    ids = [part.strip() for part in text.split(",")]
    if not text or any(not part for part in ids):
        raise UserError(f"--gpus {spec!r}: expected 'all' or a comma-separated list of GPU ids, e.g. 0,1,3")
    bad = [part for part in ids if not _GPU_ID.match(part)]
    if bad:
        raise UserError(f"--gpus {spec!r}: {', '.join(bad)} is not a GPU index or UUID (expected e.g. 0,1,3)")
    dupes = sorted({part for part in ids if ids.count(part) > 1})
    if dupes:
        raise UserError(f"--gpus {spec!r}: GPU {', '.join(dupes)} listed twice; one agent per GPU")
    return ids


def discover_gpus(env: Mapping[str, str] | None = None, *, ask_torch: bool = True) -> Discovery:
    """The GPU ids visible to this process, without creating a CUDA context.

    ``ask_torch=False`` skips the last resort (importing torch costs a second or two).
    """
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        # CUDA treats "" and "-1" (or anything after an invalid entry) as "no device".
        ids: list[str] = []
        for part in (p.strip() for p in cvd.split(",")):
            if not _GPU_ID.match(part):
                break
            ids.append(part)
        return Discovery(tuple(ids), f"CUDA_VISIBLE_DEVICES={cvd!r}")
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Discovery((), f"nvidia-smi failed ({exc})")
        if out.returncode != 0:
            reason = (out.stderr or out.stdout).strip().splitlines()
            return Discovery((), f"nvidia-smi failed ({reason[0] if reason else f'exit {out.returncode}'})")
        return Discovery(tuple(line.strip() for line in out.stdout.splitlines() if line.strip()), "nvidia-smi")
    return _torch_discovery() if ask_torch else Discovery((), "no nvidia-smi on PATH")


def _torch_discovery() -> Discovery:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return Discovery((), "no nvidia-smi and no torch")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Discovery(tuple(str(i) for i in range(count)), "no nvidia-smi on PATH; torch.cuda.device_count()")


def select_gpus(spec: str, *, cpu: bool, discovery: Discovery | None = None) -> list[str]:
    """The GPU ids to start one agent on each, checked against what is visible.

    With ``cpu=True`` nothing has to be visible (a test mode): explicit ids are
    used as given, and each child's trainer falls back to the CPU when its
    ``CUDA_VISIBLE_DEVICES`` names no real device.
    """
    wanted = parse_gpu_spec(spec)
    if cpu:
        if wanted is None:
            found = discovery or discover_gpus()
            if not found.ids:
                raise UserError("--gpus all --cpu: no GPU is visible, so name the agent slots, e.g. --gpus 0,1 --cpu")
            return list(found.ids)
        return wanted
    found = discovery or discover_gpus()
    if not found.ids:
        raise NoGPUError(
            f"no GPU is visible ({found.source}). On a GPU host, give the container GPUs "
            "(docker run --gpus all, a compose device reservation, or nvidia.com/gpu in Kubernetes) "
            "and check the NVIDIA driver with nvidia-smi; to try the agents without a GPU, "
            "pass --cpu with explicit slots, e.g. --gpus 0,1 --cpu"
        )
    if wanted is None:
        return list(found.ids)
    missing = [gpu for gpu in wanted if gpu not in found.ids]
    if missing:
        raise UserError(
            f"--gpus {spec}: GPU {', '.join(missing)} is not visible (visible: {', '.join(found.ids)}; {found.source})"
        )
    return wanted


def describe(ids: Sequence[str]) -> str:
    """``["0", "1"]`` -> ``"GPUs 0, 1"`` for log lines."""
    return f"GPU{'s' if len(ids) != 1 else ''} {', '.join(ids)}"
