"""Trials per hour of ``flexcnn optuna run`` with 1 vs 2 worker processes on this machine's cores.

Each side runs the same small study from scratch (a fresh journal file): a
random search over the learning rate of a small CNN, W&B off, so the figure
is the sweep machinery plus training. Two workloads: short trials (digits, 3
epochs, about a second each) where each worker's start-up (~3 s: Python,
torch, ``torch._dynamo``) weighs heavily, and trials of a few seconds
(mnist5k, 4 epochs), closer to a real sweep's. Workers
get ``cores / workers`` CPU threads each (the CLI's default), so two workers
on two cores do not oversubscribe. Wall time is from the command's start to
its end (interpreter, imports and worker start-up included); sides are
interleaved and the median shown.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row

REPO = Path(__file__).resolve().parents[1]
REPS = 2
SWEEP = """\
name: bench-workers
program: flexcnn
command: [flexcnn, train, --args-json, "${{args_json_file}}"]
method: random
metric: {{name: val/acc, goal: maximize}}
parameters:
  data.source: {{value: {source}}}
  data.hflip: {{value: false}}
  model.num_filters: {{value: [16, 32]}}
  model.dense_units: {{value: [64]}}
  train.epochs: {{value: {epochs}}}
  logging.progress: {{value: false}}
  logging.wandb.num_samples: {{value: 0}}
  optim.lr: {{distribution: log_uniform_values, min: 1.0e-3, max: 1.0e-2}}
"""
# label: (data source, epochs, trials per study)
WORKLOADS = {"short trials": ("digits", 3, 4), "longer trials": ("mnist5k", 4, 8)}


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp / "pycache"), "FLEXCNN_CACHE": str(tmp / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # this sandbox sets it: every import would compile from source
    return env


def study_seconds(tmp: Path, workers: int, tag: str, source: str, epochs: int, trials: int) -> float:
    """Wall seconds of one ``flexcnn optuna run`` of ``trials`` trials with ``workers`` processes."""
    sweep = tmp / f"{tag}.yaml"
    sweep.write_text(SWEEP.format(source=source, epochs=epochs))
    env = _env(tmp)
    argv = [sys.executable, "-m", "flexcnn", "optuna", "run", str(sweep), "--study", tag]
    argv += ["--storage", str(tmp / f"{tag}.log"), "--n-trials", str(trials), "--workers", str(workers)]
    argv += ["--wandb-mode", "disabled", "--output-dir", str(tmp / "runs"), "--seed", "0"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"flexcnn optuna run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def run() -> list[Row]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = [sys.executable, "-c", "import flexcnn.cli, flexcnn.run, flexcnn.search.study, optuna"]
        subprocess.run(warm, cwd=REPO, env=_env(Path(tmp)), check=True, timeout=600)  # bytecode cache, not measured
        for label, (source, epochs, trials) in WORKLOADS.items():
            samples: dict[int, list[float]] = {1: [], 2: []}
            for rep in range(REPS):
                for workers in (1, 2):
                    tag = f"{source}-w{workers}-{rep}"
                    samples[workers].append(study_seconds(Path(tmp), workers, tag, source, epochs, trials))
            per_hour = {k: trials * 3600 / statistics.median(v) for k, v in samples.items()}
            rows.append(
                Row(
                    f"optuna trials/h, 2 vs 1 worker, {label}",
                    per_hour[2],
                    per_hour[1],
                    "t/h",
                    f"1 worker ({cores} cores); {trials} {source} trials of {epochs} epochs per study",
                    aim=">=1.7x",
                )
            )
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(), "workers")
