"""Trial start-up: from process start to the first optimiser step of ``flexcnn train``.

Each sample is a fresh ``python`` process that runs the real CLI (``flexcnn
train``, tiny digits model) with a global optimiser-step hook installed first:
the hook writes the wall clock at the first step and raises KeyboardInterrupt,
which run() handles as a clean Ctrl-C (reporters finish, W&B included), so a
sample costs no more than the start-up itself. The clock starts in the parent
just before the process is spawned, so interpreter start and every import
count. Rows: with W&B offline (``--wandb-mode offline``, its ``init``
included) against the same trial without W&B, and that against the floor,
``python -c "import torch"``. Samples are interleaved and the medians shown;
CPU seconds (user + system of the child) are given too, because on a loaded
machine wall time is mostly waiting for a core.

A third row is the start-up of trials 2..N inside a running Optuna worker
(``flexcnn optuna worker`` runs trial after trial in one process, W&B offline):
from the trial's creation in the study (Optuna's ``datetime_start``, before
its parameters are sampled) to its first optimiser step, stamped by the same
kind of hook, installed through ``sitecustomize`` in the worker process.

Python here is run with a private bytecode cache, warmed by one unmeasured
start, because this sandbox sets PYTHONDONTWRITEBYTECODE and would otherwise
compile every module from source in every process.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row

REPO = Path(__file__).resolve().parents[1]
RUNS = 3
TRAIN = [
    "train",
    "--set",
    "data.source=digits",
    "--set",
    "data.hflip=false",
    "--set",
    "model.num_filters=[8,16]",
    "--set",
    "model.dense_units=[32]",
    "--set",
    "train.epochs=1",
    "--set",
    "logging.progress=false",
]
# Runs in the child before anything else: times the imports and the first optimiser step.
PROBE = """
import os, sys, time
t_start = time.time()
from torch.optim.optimizer import register_optimizer_step_post_hook

def _first_step(optimizer, args, kwargs):
    marks = {"start": t_start, "step": time.time(), "modules": sorted(sys.modules)}
    with open(os.environ["FLEXCNN_PROBE_OUT"], "w") as fh:
        fh.write(__import__("json").dumps(marks))
    raise KeyboardInterrupt  # run() stops cleanly here, as on Ctrl-C

register_optimizer_step_post_hook(_first_step)
from flexcnn.cli import main
main(sys.argv[1:])
"""


# sitecustomize for worker processes: a line with the wall clock at each optimiser's first step.
WORKER_HOOK = """
import os, time, weakref
if os.environ.get("FLEXCNN_PROBE_OUT"):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _stepped = weakref.WeakSet()

    def _first_step(optimizer, args, kwargs):
        if optimizer not in _stepped:
            _stepped.add(optimizer)
            with open(os.environ["FLEXCNN_PROBE_OUT"], "a") as fh:
                fh.write(f"{time.time()}\\n")

    register_optimizer_step_post_hook(_first_step)
"""
WORKER_TRIALS = 4
WORKER_SWEEP = """\
name: bench-startup
program: flexcnn
command: [flexcnn, train, --args-json, "${args_json_file}"]
method: random
metric: {name: val/acc, goal: maximize}
parameters:
  data.source: {value: digits}
  data.hflip: {value: false}
  model.num_filters: {value: [8, 16]}
  model.dense_units: {value: [32]}
  train.epochs: {value: 1}
  logging.progress: {value: false}
  optim.lr: {distribution: log_uniform_values, min: 1.0e-3, max: 1.0e-2}
"""


def _child_env(home: str, pycache: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPYCACHEPREFIX": pycache,
        "WANDB_DIR": home,
        "WANDB_CONFIG_DIR": f"{home}/config",
        "WANDB_CACHE_DIR": f"{home}/cache",
        "WANDB_SILENT": "true",
        "FLEXCNN_CACHE": f"{home}/flexcnn-cache",
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    return env


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds and child CPU seconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def startup(env: dict[str, str], out_dir: str, wandb_mode: str) -> dict[str, Any]:
    """One probed ``flexcnn train``: seconds to the first optimiser step, and its CPU seconds."""
    probe_out = Path(out_dir) / "probe.json"
    probe_out.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-c",
        PROBE,
        *TRAIN,
        "--set",
        f"logging.output_dir={out_dir}",
        "--wandb-mode",
        wandb_mode,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    proc = subprocess.run(argv, cwd=REPO, env={**env, "FLEXCNN_PROBE_OUT": str(probe_out)}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not probe_out.is_file():
        raise RuntimeError(f"probe saw no optimiser step (exit {proc.returncode}): {proc.stderr[-2000:]}")
    marks = json.loads(probe_out.read_text())
    return {
        "to_step": marks["step"] - spawned,
        "interpreter": marks["start"] - spawned,
        "cpu_total": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "modules": marks["modules"],
    }


def in_worker_startups(env: dict[str, str], home: str) -> list[float]:
    """Seconds from creation to first optimiser step of trials 2..N in one ``flexcnn optuna worker`` process."""
    import optuna

    folder = Path(home) / "in-worker"
    (folder / "site").mkdir(parents=True, exist_ok=True)
    (folder / "site" / "sitecustomize.py").write_text(WORKER_HOOK)
    (folder / "sweep.yaml").write_text(WORKER_SWEEP)
    stamps, journal = folder / "steps.txt", folder / "study.log"
    site = os.pathsep.join(p for p in (str(folder / "site"), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "flexcnn", "optuna", "run", str(folder / "sweep.yaml"), "--study", "startup"]
    argv += ["--storage", str(journal), "--n-trials", str(WORKER_TRIALS), "--workers", "1", "--seed", "0"]
    argv += ["--wandb-mode", "offline", "--output-dir", str(folder / "runs")]
    proc = subprocess.run(argv, cwd=REPO, env={**env, "PYTHONPATH": site, "FLEXCNN_PROBE_OUT": str(stamps)},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0 or not stamps.is_file():
        raise RuntimeError(f"flexcnn optuna run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    steps = sorted(float(line) for line in stamps.read_text().split())
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="startup", storage=storage).get_trials()
    starts = sorted(t.datetime_start.timestamp() for t in trials if t.datetime_start is not None)
    # Each trial's first step is the first stamp after its creation; trial 1 (imports) is left out.
    return [min(t for t in steps if t >= start) - start for start in starts[1:]]


def measure(runs: int = RUNS) -> dict[str, list[float]]:
    """Interleaved samples of: import torch, start-up without W&B, start-up with W&B offline."""
    out: dict[str, list[float]] = {k: [] for k in ("torch", "torch_cpu", "plain", "plain_cpu", "wandb")}
    out["wandb_cpu"] = []
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as pycache:
        env = _child_env(home, pycache)
        startup(env, home, "offline")  # warm the bytecode cache and the page cache (not measured)
        for _ in range(runs):
            wall, cpu, _proc = _timed([sys.executable, "-c", "import torch"], env)
            out["torch"].append(wall)
            out["torch_cpu"].append(cpu)
            for mode, key in (("disabled", "plain"), ("offline", "wandb")):
                sample = startup(env, home, mode)
                out[key].append(sample["to_step"])
                out[f"{key}_cpu"].append(sample["cpu_total"])
        out["in_worker"] = in_worker_startups(env, home)
    return out


def run() -> list[Row]:
    m = measure()
    med = {k: statistics.median(v) for k, v in m.items()}
    cpu = f"CPU s: {med['wandb_cpu']:.1f} vs {med['plain_cpu']:.1f} vs {med['torch_cpu']:.1f}"
    return [
        Row(
            "trial start-up to 1st step, W&B offline",
            med["wandb"],
            med["plain"],
            "s",
            f"same without W&B ({cpu} import torch)",
            aim="<=3 s",
            higher_is_better=False,
        ),
        Row(
            "  ... trials 2..N in a running Optuna worker",
            med["in_worker"],
            med["wandb"],
            "s",
            "a fresh process per trial (above; what `wandb agent` does)",
            higher_is_better=False,
        ),
        Row(
            "trial start-up to 1st step, no W&B",
            med["plain"],
            med["torch"],
            "s",
            'python -c "import torch" (the floor)',
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(measure(1), indent=2))
