"""Measure real learning curves of flexcnn trials over the space of sweeps/flexcnn.yaml.

    nohup nice -n 19 .venv/bin/python -m bench.searchsim.generate --workers 2 --cpu-budget 7200 &

Configuration ``i`` is drawn uniformly from the space with ``default_rng([SEED, i])``, so any
process can compute it and a resumed run skips the indices already measured. Every tenth index
(``i % 10 == 9``) re-runs configuration ``i - 9`` with ``train.seed=1``: those pairs measure how
much val/acc moves with the seed alone, the ceiling for any surrogate's rank correlation.

Each trial is one ``flexcnn.run.run`` of the sweep's base config with the trial's parameters
and ``FIXED`` (6 epochs, ``data.limit`` 1,000, one thread), the config the Optuna path would
build. A reporter notes ``time.process_time()`` and ``time.perf_counter()`` at each epoch's
start and end; the record holds per-epoch val/acc and CPU and wall seconds, the start-up
before epoch 1 and the final test evaluation after the last epoch.

CPU seconds, not wall seconds, are the simulated duration: this machine is shared with other
jobs, and a single-threaded trial's CPU time is what it would take on an idle core.

The raw file (bench/out/searchsim/curves.jsonl) is append-only and written once per finished
trial, under a lock, so a killed run loses at most the trials in progress. When the CPU budget
is spent, the records are packed into bench/data/mnist5k-curves.jsonl.gz (``--pack`` alone packs
what there is).
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import io
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.searchsim.space import FIXED, REPO

SEED = 20240615  # the design's seed: configuration i is default_rng([SEED, i])
REPEAT_EVERY = 10
RAW = REPO / "bench" / "out" / "searchsim" / "curves.jsonl"
PACKED = REPO / "bench" / "data" / "mnist5k-curves.jsonl.gz"
MAX_INDEX = 100_000


def config_index(i: int) -> tuple[int, int]:
    """(configuration index, train.seed) measured at design index ``i``."""
    if i % REPEAT_EVERY == REPEAT_EVERY - 1:
        return i - (REPEAT_EVERY - 1), 1
    return i, 0


# --------------------------------------------------------------------------- the file


@contextmanager
def locked(path: Path) -> Iterator[io.TextIOWrapper]:
    """The raw file opened for append under an exclusive lock (the workers share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_records(fh: io.TextIOWrapper) -> list[dict[str, Any]]:
    fh.seek(0)
    out = []
    for line in fh:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write (the lock keeps workers from interleaving)
    return out


def append(fh: io.TextIOWrapper, record: dict[str, Any]) -> None:
    fh.seek(0, os.SEEK_END)
    fh.write(json.dumps(record, separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def spent(records: list[dict[str, Any]]) -> float:
    return sum(r["total_cpu"] for r in records if r.get("kind") == "trial")


# --------------------------------------------------------------------------- one trial


def _clock_reporter() -> Any:
    from flexcnn.reporters.base import Reporter

    class Clock(Reporter):
        """Marks (cpu, wall) at each epoch's start and end, and keeps the epoch's metrics."""

        def __init__(self) -> None:
            self.starts: list[tuple[float, float]] = []
            self.ends: list[tuple[float, float]] = []
            self.metrics: list[dict[str, float]] = []

        def on_epoch_start(self, epoch: int, batches: int) -> None:
            self.starts.append((time.process_time(), time.perf_counter()))

        def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            self.ends.append((time.process_time(), time.perf_counter()))
            self.metrics.append(dict(metrics))

    return Clock()


def run_trial(i: int, base_tree: dict[str, Any], space: Any) -> dict[str, Any]:
    """Train design index ``i``; return its record (status failed, with the epochs it got, on an error)."""
    import numpy as np

    from bench.searchsim.space import draw
    from flexcnn.config import validate_config
    from flexcnn.overrides import apply_overrides
    from flexcnn.run import run

    index, seed = config_index(i)
    params = draw(space, np.random.default_rng([SEED, index]))
    overrides = {**space.decode(params), **FIXED, "train.seed": seed}
    clock = _clock_reporter()
    status, reason = "completed", ""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flexcnn-curves-") as tmp:
        try:
            config = validate_config(apply_overrides(base_tree, overrides), source="benchmark trial")
            result = run(config, [clock], run_dir=Path(tmp))
            status, reason = result.status, result.reason
        except Exception as exc:  # a diverged or invalid trial is data too: sweeps meet it
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
    cpu1, wall1 = time.process_time(), time.perf_counter()
    marks = [(cpu0, wall0)] if not clock.starts else [clock.starts[0]]
    marks += clock.ends
    epochs = [
        {
            "val_acc": round(m["val/acc"], 5),
            "val_loss": round(m["val/loss"], 5),
            "train_loss": round(m["train/loss"], 5),
            "cpu": round(marks[k + 1][0] - marks[k][0], 4),
            "wall": round(marks[k + 1][1] - marks[k][1], 4),
        }
        for k, m in enumerate(clock.metrics)
    ]
    last = marks[-1]
    return {
        "kind": "trial",
        "i": i,
        "config": index,
        "seed": seed,
        "params": params,
        "status": status,
        "reason": reason,
        "epochs": epochs,
        "startup_cpu": round(marks[0][0] - cpu0, 4),  # data, model, optimiser: before epoch 1
        "startup_wall": round(marks[0][1] - wall0, 4),
        "final_cpu": round(cpu1 - last[0], 4),  # test evaluation and summary after the last epoch
        "final_wall": round(wall1 - last[1], 4),
        "total_cpu": round(cpu1 - cpu0, 4),
        "total_wall": round(wall1 - wall0, 4),
        "load1": round(os.getloadavg()[0], 2),
        "pid": os.getpid(),
    }


# --------------------------------------------------------------------------- workers


def worker(w: int, workers: int, budget: float, raw: str) -> None:
    import torch  # noqa: F401  (counted below: what a fresh process pays before its first trial)

    from bench.searchsim.space import bench_sweep
    from flexcnn.search.study import plan_study

    plan = plan_study(bench_sweep())
    path = Path(raw)
    with locked(path) as fh:
        append(
            fh,
            {
                "kind": "worker",
                "pid": os.getpid(),
                "worker": w,
                # Importing torch and flexcnn: paid once per process by an Optuna worker, once per
                # run by a W&B agent (it starts the sweep's command for every run).
                "import_cpu": round(time.process_time(), 3),  # CPU seconds since this process started
            },
        )
    for i in range(w, MAX_INDEX, workers):
        with locked(path) as fh:
            records = read_records(fh)
        if spent(records) >= budget:
            return
        if any(r.get("kind") == "trial" and r["i"] == i for r in records):
            continue
        record = run_trial(i, plan.base_tree, plan.space)
        with locked(path) as fh:
            append(fh, record)
        print(
            f"[w{w}] trial {i}: {record['status']} val/acc {[e['val_acc'] for e in record['epochs']]} "
            f"{record['total_cpu']:.1f} cpu-s {record['total_wall']:.1f} s",
            flush=True,
        )


def machine() -> dict[str, Any]:
    import torch

    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "bench", "flexcnn"))}


def session_record(args: argparse.Namespace) -> dict[str, Any]:
    from bench.searchsim.space import EPOCHS, LIMIT, SWEEP_FILE, grid_size, search_space

    space = search_space()
    return {
        "kind": "session",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"nice -n {os.nice(0)} python -m bench.searchsim.generate " + " ".join(sys.argv[1:]),
        **git_commit(),
        "machine": machine(),
        "workers": args.workers,
        "cpu_budget": args.cpu_budget,
        "design_seed": SEED,
        "repeat_every": REPEAT_EVERY,
        "sweep": str(SWEEP_FILE.relative_to(REPO)),
        "space_fingerprint": space.fingerprint,
        "grid_size": grid_size(space),
        "epochs": EPOCHS,
        "limit": LIMIT,
        "fixed": FIXED,
        "duration": "cpu: time.process_time() of a single-threaded trial; the simulator's seconds. "
        "wall: time.perf_counter() on a machine shared with other jobs, for reference.",
    }


def pack(raw: Path = RAW, packed: Path = PACKED) -> int:
    """Write the records, sessions first and trials by index, as reproducible gzip; return trial count."""
    with locked(raw) as fh:
        records = read_records(fh)
    trials = {r["i"]: r for r in records if r.get("kind") == "trial"}  # one per index
    head = [r for r in records if r.get("kind") != "trial"]
    lines = [json.dumps(r, separators=(",", ":")) for r in [*head, *(trials[i] for i in sorted(trials))]]
    packed.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(packed, "wb", mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(lines) + "\n").encode())
    return len(trials)


def seed_raw_from_packed(raw: Path = RAW, packed: Path = PACKED) -> None:
    """A fresh clone resumes from the committed data: the raw file starts as its unpacked copy."""
    if not raw.exists() and packed.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(gzip.decompress(packed.read_bytes()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="trial processes side by side (one thread each)")
    parser.add_argument("--cpu-budget", type=float, default=7200.0, help="stop at this many trial CPU seconds")
    parser.add_argument("--pack", action="store_true", help="only pack the raw file into bench/data")
    args = parser.parse_args(argv)
    seed_raw_from_packed()
    if not args.pack:
        with locked(RAW) as fh:
            append(fh, session_record(args))
        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no torch state forked
        procs = [
            ctx.Process(target=worker, args=(w, args.workers, args.cpu_budget, str(RAW))) for w in range(args.workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    n = pack()
    print(f"packed {n} trials into {PACKED.relative_to(REPO)} ({PACKED.stat().st_size / 1024:.0f} KiB)", flush=True)


if __name__ == "__main__":
    main()
