"""Replay every (strategy, K, seed) once, in parallel processes, and cache the traces.

A replay's trace depends on the benchmark data, the strategy's spec, K, the seed and the replay
settings; all of them are in its cache key, so changing any one recomputes just those replays.
W&B's GP (``bayes``) costs about a tenth of a second per suggestion, so the cache is committed
(bench/data/search-sim-traces.jsonl.gz) and ``python -m bench search-sim`` prints from it in
seconds. New traces are appended to bench/out/searchsim/traces.jsonl as they finish (a killed
run keeps them) and merged into the packed file at the end.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.searchsim.simulator import Trace, simulate
from bench.searchsim.space import REPO
from bench.searchsim.strategies import Strategy, registry

PACKED = REPO / "bench" / "data" / "search-sim-traces.jsonl.gz"
PENDING = REPO / "bench" / "out" / "searchsim" / "traces.jsonl"
SIM_VERSION = "1"  # bump when simulator.py changes what a replay does


@dataclass(frozen=True)
class Settings:
    """What a replay runs until: ``stop_value`` reached and ``min_time`` passed, or ``horizon``.

    Times are CPU seconds of all workers together; a replay with K workers gets a K-th of them
    as simulated wall time, so K = 8 is not asked to fill eight times the compute of K = 1.
    """

    data: str  # sha256 of the benchmark file, first 16 hex digits
    stop_value: float
    min_time: float
    horizon: float
    max_trials: int

    def key(self, strategy: Strategy, workers: int, seed: int) -> str:
        blob = json.dumps([SIM_VERSION, asdict(self), strategy.key, workers, seed])
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def data_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_cache() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if PACKED.exists():
        with gzip.open(PACKED, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                out[rec["key"]] = rec
    if PENDING.exists():
        for line in PENDING.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by a kill
            out[rec["key"]] = rec
    return out


def save_cache(records: Iterable[dict[str, Any]], keep: set[str]) -> None:
    """Rewrite the packed cache with the records still current (``keep``), then drop the pending file."""
    lines = sorted(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records if r["key"] in keep)
    PACKED.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(PACKED, "wb", mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(lines) + "\n").encode())
    PENDING.unlink(missing_ok=True)


# --------------------------------------------------------------------------- worker processes

_STATE: dict[str, Any] = {}


def _init(data_path: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # replays run side by side; one core each
    from bench.searchsim.data import load
    from bench.searchsim.surrogate import Surrogate

    _STATE["surrogate"] = Surrogate(load(Path(data_path)))
    _STATE["strategies"] = registry()


def _replay(task: tuple[str, int, int, dict[str, Any]]) -> tuple[str, int, int, dict[str, Any], float]:
    name, workers, seed, settings = task
    strategy: Strategy = _STATE["strategies"][name]
    context = None
    if strategy.wandb:
        if "bridge" not in _STATE:
            from bench.searchsim.engines import WandbBridge

            _STATE["bridge"] = WandbBridge()
        context = _STATE["bridge"]
    started = time.process_time()
    engine = strategy.build(seed, workers, context)
    trace = simulate(
        engine,
        _STATE["surrogate"],
        workers,
        stop_value=settings["stop_value"],
        min_time=settings["min_time"] / workers,
        horizon=settings["horizon"] / workers,
        max_trials=settings["max_trials"],
    )
    return name, workers, seed, trace.to_json(), time.process_time() - started


def replay_all(
    data_path: Path,
    settings: Settings,
    names: Sequence[str],
    ks: Sequence[int],
    seeds: Sequence[int],
    *,
    recompute: Sequence[str] = (),
    jobs: int = 2,
) -> dict[tuple[str, int, int], Trace]:
    """Traces for every (strategy, K, seed): from the cache, else replayed now (and cached)."""
    by_name = registry()
    cache = load_cache()
    wanted: dict[tuple[str, int, int], str] = {
        (n, k, s): settings.key(by_name[n], k, s) for n in names for k in ks for s in seeds
    }
    todo = [(n, k, s) for (n, k, s), key in wanted.items() if key not in cache or n in recompute]
    if todo:
        # The comparison before the candidates; within it the slow W&B replays first, so the
        # processes finish together.
        todo.sort(key=lambda t: (t[0].startswith("cand-"), not by_name[t[0]].wandb, -t[1], t[0], t[2]))
        print(f"search-sim: replaying {len(todo)} of {len(wanted)} sweeps ({jobs} processes)", file=sys.stderr)
        PENDING.parent.mkdir(parents=True, exist_ok=True)
        plain = asdict(settings)
        ctx = mp.get_context("spawn")
        done, t0 = 0, time.perf_counter()
        with ctx.Pool(jobs, initializer=_init, initargs=(str(data_path),)) as pool, PENDING.open("a") as out:
            for name, k, seed, trace, cpu in pool.imap_unordered(_replay, [(*t, plain) for t in todo], chunksize=1):
                rec = {"key": wanted[(name, k, seed)], "data": settings.data, "strategy": name, "k": k, "seed": seed}
                rec.update(cpu=round(cpu, 2), trace=trace)
                cache[rec["key"]] = rec
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                out.flush()
                done += 1
                if done % 50 == 0 or done == len(todo):
                    rate = done / (time.perf_counter() - t0)
                    print(
                        f"  {done}/{len(todo)} replays, {rate * 60:.0f}/min, last {name} K={k}",
                        file=sys.stderr,
                        flush=True,
                    )
        # Replays of older benchmark data are dropped; other strategies' and seeds' stay.
        save_cache(cache.values(), keep={key for key, r in cache.items() if r.get("data") == settings.data})
    return {t: Trace.from_json(cache[key]["trace"]) for t, key in wanted.items()}
