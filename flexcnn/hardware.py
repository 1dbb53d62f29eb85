"""Device, precision and CPU choices: what a run trains on, and how processes share the cores.

The CPU policy lives here alone: the cores this process may use
(:func:`usable_cores`), each worker's share when K processes train side by
side (:func:`threads_per_worker`, :func:`worker_env`), a run's intra-op
threads (:func:`cpu_threads`) and its data-loading processes
(:func:`loader_workers`).

torch is imported where it is used, so launchers that only share out cores
(``flexcnn agent``, ``flexcnn optuna run``) do not load it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flexcnn.errors import ConfigError
from flexcnn.sections import TrainConfig

if TYPE_CHECKING:
    import torch

MAX_LOADER_WORKERS = 8  # data-loading processes per run, however many cores it may use


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def needs_scaler(self) -> bool:
        import torch

        return self.amp_dtype == torch.float16 and self.device.type == "cuda"

    def describe(self) -> str:
        """``cpu (bf16 autocast)``: what the run shows and logs as its device."""
        import torch

        names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
        fast = [f"{names[self.amp_dtype]} autocast"] if self.amp_dtype is not None else []
        fast += ["channels_last"] if self.channels_last else []
        return f"{self.device} ({', '.join(fast)})" if fast else str(self.device)


def resolve_hardware(cfg: TrainConfig) -> Hardware:
    """Pick the device and the fast paths that pay off on it."""
    import torch

    threads = cpu_threads(cfg.threads)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"train.device={cfg.device!r} but no CUDA GPU is visible; use train.device=cpu or auto")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={cfg.device!r}: only {torch.cuda.device_count()} GPU(s) visible")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("train.device=mps but MPS is not available on this machine")
    cuda = device.type == "cuda"
    amp: torch.dtype | None = None
    # auto: bf16 on CUDA only. On CPUs with native bf16 it trained 1.1 to 1.9x faster
    # (bench/bench_precision.py), but ResNet18 at 16 px (1x1 feature maps) sporadically reached
    # NaN losses under bf16 there, in NCHW and more often in NHWC, so on CPU it is opt-in.
    if cfg.amp == "bf16" or (cfg.amp == "auto" and cuda and native_bf16(device)):
        amp = torch.bfloat16
    elif cfg.amp == "fp16":
        amp = torch.float16
    # auto: on CUDA only (tensor cores want NHWC). On CPU, bf16 + NHWC was fastest (1.1 to 1.7x
    # over bf16 NCHW) but is where those NaNs were most frequent: a NaN weight gradient from the
    # 3x3 stride-2 conv over a 1x1 map, 3 runs in 10 on a loaded machine.
    channels_last = {"on": True, "off": False}.get(cfg.channels_last, cuda)
    if cuda:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Hardware(device, amp, channels_last)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (and so faster than fp32) on ``device``.

    CUDA: Ampere and later. CPU: AVX512-BF16 or AMX, where oneDNN's bf16
    convolutions trained the CNNs of ``bench/bench_precision.py`` 1.1 to 1.9x
    faster than fp32; CPUs without them emulate bf16 and would be slower.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up defensively
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def cpu_threads(requested: int | None, env: Mapping[str, str] = os.environ) -> int | None:
    """Intra-op CPU threads for this process; None leaves torch's default (which honours OMP_NUM_THREADS).

    In order: ``train.threads``; ``$FLEXCNN_THREADS``, which a launcher of K
    workers on K cores sets to cores/K (it reaches children that get no
    ``--set``, such as ``wandb agent``'s); ``$OMP_NUM_THREADS``; else the
    container's CPU quota (cgroup ``cpu.max``) when it is below torch's
    default, because torch counts the host's cores, not the quota, and 64
    threads on a 2-CPU quota spend their time descheduled.
    """
    import torch

    if requested:
        return requested
    for name in ("FLEXCNN_THREADS", "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    quota = cgroup_cpu_quota()
    if quota is not None and quota < torch.get_num_threads():
        return quota
    return None


def worker_env(threads: int) -> dict[str, str]:
    """Environment for a child process that trains on ``threads`` CPU threads next to other workers.

    Set before the child starts, because OpenMP reads it when torch loads.
    ``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep instead of
    spinning: where processes share cores, spinning threads burn the time
    the others need (on a 2-core machine shared with 4 busy processes,
    mnist5k training went from 220 to 740 img/s with it; README, "Speed").
    """
    return {"FLEXCNN_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets), capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the host's cores, which a container may not be allowed to use.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def threads_per_worker(workers: int) -> int:
    """Each of ``workers`` training processes' share of the usable cores (at least one each)."""
    return max(1, usable_cores() // max(1, workers))


def loader_workers() -> int:
    """Data-loading processes for one run: every usable core but the training process's own, at most 8."""
    return max(0, min(MAX_LOADER_WORKERS, usable_cores() - 1))


def cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """CPUs allowed by a cgroup v2 quota (``quota period``), rounded up; None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))
