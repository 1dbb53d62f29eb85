"""How many worker processes ``flexcnn optuna run`` starts when ``--workers`` is not given.

On CPU: one per usable core, one thread each, up to ``MAX_AUTO_WORKERS``; above that the workers share
the spare cores as threads. From the learning-curve benchmark of sweeps/flexcnn.yaml's space
(``python -m bench search-sim``, "How workers share cores"; a second thread made an epoch x1.67
faster): with flexcnn's default search, 2 one-thread workers reached the targets sooner than 1
two-thread worker on 2 cores (median 32 s vs 39 s, p90 71 s vs 107 s), 4 sooner than 2 on 4
cores (17/39 vs 19/42), but on 16 cores 8 two-thread workers beat 16 one-thread ones (6/12 vs
7/13): past about 8 trials at once, more parallel draws help less than faster trials. Also capped
at the trial budget, since an idle worker only holds memory.

On a GPU: one worker. ``optuna run`` does not pin its workers to devices, so several would share
the first GPU; ``flexcnn agent optuna`` starts one per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexcnn.hardware import usable_cores

MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class WorkerLayout:
    workers: int
    why: str  # shown in the study's start-up line


def default_layout(trials: int, device: str) -> WorkerLayout:
    """The workers for a study of ``trials`` trials whose base config trains on ``device`` (train.device)."""
    if device != "cpu" and _gpu_visible():
        return WorkerLayout(1, "a GPU is visible: one worker (flexcnn agent optuna runs one per GPU)")
    cores = usable_cores()
    workers = max(1, min(cores, trials, MAX_AUTO_WORKERS))
    limits = [f"{cores} usable core{'s' if cores != 1 else ''}"]
    if workers == trials and trials < cores:
        limits.append(f"{trials} trial{'s' if trials != 1 else ''}")
    if workers == MAX_AUTO_WORKERS < cores:
        limits.append(f"at most {MAX_AUTO_WORKERS}")
    return WorkerLayout(workers, f"--workers auto: {', '.join(limits)}")


def _gpu_visible() -> bool:
    from flexcnn.agents.gpus import discover_gpus

    # CUDA_VISIBLE_DEVICES or nvidia-smi, which every NVIDIA driver install and GPU container has;
    # not torch, whose import would slow every study's start by a second or two.
    return bool(discover_gpus(ask_torch=False).ids)
