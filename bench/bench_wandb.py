"""What W&B offline logging costs a run: init to finish, end-of-run tables and artifact included.

A fresh Python process trains the same small run (digits, 3 epochs) several
times without W&B and with an offline W&B reporter, alternating. A timing
wrapper adds up the seconds spent inside the reporter's hooks (``wandb.init``,
per-epoch ``log``, the end-of-run confusion matrix, per-class/ROC/PR/sample
tables, the model artifact and ``finish``). The first W&B run in the process
also pays for importing wandb (and pandas, which wandb.Table imports) and
starting the wandb-core service; it is reported apart from the warm runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row
from flexcnn.reporters.base import Reporter

RUNS = 3
OVERRIDES = [
    "data.source=digits",
    "data.hflip=false",
    "model.num_filters=[16,32]",
    "model.dense_units=[64]",
    "train.epochs=3",
    "logging.progress=false",
    "logging.wandb.num_samples=32",
]


class _Timed(Reporter):
    """Forwards the start, epoch and end hooks to ``inner`` and adds up the seconds they take."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def _timed(self, name: str, *args: Any) -> None:
        start = time.perf_counter()
        getattr(self.inner, name)(*args)
        self.seconds += time.perf_counter() - start

    def on_start(self, info: Any) -> None:
        self._timed("on_start", info)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._timed("on_epoch", epoch, metrics)

    def on_end(self, result: Any) -> None:
        self._timed("on_end", result)


def measure(runs: int = RUNS) -> dict[str, Any]:
    """Run in a fresh process: wall seconds per run without W&B, with W&B, and the hooks' own seconds."""
    from flexcnn.config import load_config
    from flexcnn.reporters.wandb import wandb_reporter_for
    from flexcnn.run import run as run_training

    out: dict[str, Any] = {"plain": [], "wandb": [], "hooks": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, [*OVERRIDES, f"logging.output_dir={tmp}"])
        run_training(config, run_dir=Path(tmp) / "warmup")  # data, torch kernels and allocator warm
        # Interleaved, so drift in machine load hits both sides alike.
        for i in range(runs):
            start = time.perf_counter()
            run_training(config, run_dir=Path(tmp) / f"plain-{i}")
            out["plain"].append(time.perf_counter() - start)
            start = time.perf_counter()
            timed = _Timed(wandb_reporter_for(config, mode="offline"))
            run_training(config, [timed], run_dir=Path(tmp) / f"wandb-{i}")
            out["wandb"].append(time.perf_counter() - start)
            out["hooks"].append(timed.seconds)
    return out


def _measure_in_fresh_process(runs: int, pycache: str) -> dict[str, Any]:
    """``measure`` in a new interpreter whose bytecode cache lives in ``pycache``.

    Python normally caches compiled modules; this sandbox sets
    PYTHONDONTWRITEBYTECODE, which makes every import compile from source. A
    private PYTHONPYCACHEPREFIX gives a first process that compiles (as right
    after an install) and a second one that finds the cache (as on any later day).
    """
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "PYTHONPYCACHEPREFIX": pycache,
            "WANDB_CONFIG_DIR": f"{home}/config",
            "WANDB_CACHE_DIR": f"{home}/cache",
            "WANDB_SILENT": "true",
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("WANDB_API_KEY", None)
        code = f"import json; from bench.bench_wandb import measure; print(json.dumps(measure({runs})))"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> list[Row]:
    with tempfile.TemporaryDirectory() as pycache:
        compiling = _measure_in_fresh_process(1, pycache)
        cached = _measure_in_fresh_process(RUNS, pycache)
    plain = statistics.mean(cached["plain"])
    warm = cached["hooks"][1:] or cached["hooks"]
    wall_extra = statistics.mean(cached["wandb"][1:] or cached["wandb"]) - plain
    baseline = "whole run without W&B (digits, 3 ep)"
    return [
        Row(
            "W&B offline, 1st run in process, no .pyc",
            compiling["hooks"][0],
            plain,
            "s",
            baseline,
            aim="<3 s",
            higher_is_better=False,
        ),
        Row(
            "W&B offline, 1st run in process (.pyc cached)",
            cached["hooks"][0],
            plain,
            "s",
            baseline,
            aim="<3 s",
            higher_is_better=False,
        ),
        Row(
            "W&B offline per later run (init..finish)",
            statistics.mean(warm),
            plain,
            "s",
            baseline,
            aim="<3 s",
            higher_is_better=False,
        ),
        Row(
            "run() wall time with W&B offline (later runs)",
            plain + wall_extra,
            plain,
            "s",
            f"same run without W&B ({wall_extra:+.2f} s, machine noise incl.)",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
