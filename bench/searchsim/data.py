"""The measured learning curves, as the surrogate and the simulator read them."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.searchsim.generate import PACKED, RAW


@dataclass(frozen=True)
class Curve:
    """One measured trial: per-epoch val/acc and CPU seconds, plus what a trial costs around its epochs."""

    index: int  # the configuration index of the design (generate.config_index)
    seed: int  # train.seed
    params: dict[str, Any]  # as Optuna stores them (list choices JSON-encoded)
    status: str
    val_acc: tuple[float, ...]
    epoch_cpu: tuple[float, ...]
    startup_cpu: float  # before epoch 1: data, model, optimiser
    final_cpu: float  # after the last epoch of a completed trial: test evaluation, summary

    @property
    def best(self) -> float:
        """The best val/acc over the epochs (what best.pt holds; NaN for a trial with no epoch)."""
        return max(self.val_acc) if self.val_acc else math.nan

    @property
    def total_cpu(self) -> float:
        return self.startup_cpu + sum(self.epoch_cpu) + self.final_cpu


@dataclass(frozen=True)
class Benchmark:
    curves: tuple[Curve, ...]  # seed-0 trials of distinct configurations: the table the surrogate answers from
    repeats: tuple[tuple[Curve, Curve], ...]  # (seed 0, seed 1) runs of the same configuration
    sessions: tuple[dict[str, Any], ...]
    import_cpu: tuple[float, ...]  # per worker process: importing torch and flexcnn
    source: Path
    epochs: int

    def target(self, one_in: int) -> float:
        """The val/acc that about one configuration in ``one_in`` reaches (best over its epochs).

        The k-th best value with k = round(n / one_in): val/acc takes values k/450 on this split,
        so an exact fraction is not always possible; ``reach_fraction`` says what it came to.
        """
        best = sorted((c.best for c in self.curves if math.isfinite(c.best)), reverse=True)
        k = max(1, round(len(best) / one_in))
        return best[k - 1]

    def reach_fraction(self, target: float) -> float:
        return sum(c.best >= target for c in self.curves) / len(self.curves)


def _curve(record: dict[str, Any]) -> Curve:
    epochs = record["epochs"]
    return Curve(
        index=record["config"],
        seed=record["seed"],
        params=record["params"],
        status=record["status"],
        val_acc=tuple(e["val_acc"] for e in epochs),
        epoch_cpu=tuple(e["cpu"] for e in epochs),
        startup_cpu=record["startup_cpu"],
        final_cpu=record["final_cpu"] if record["status"] == "completed" else 0.0,
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        out = []
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
        return out


def load(path: Path | None = None) -> Benchmark:
    """The packed benchmark (bench/data), or the raw file of a generator still running when given."""
    path = path or (PACKED if PACKED.exists() else RAW)
    records = read_records(path)
    sessions = tuple(r for r in records if r.get("kind") == "session")
    epochs = int(sessions[0]["epochs"]) if sessions else 6
    trials = {r["i"]: r for r in records if r.get("kind") == "trial"}
    main = {r["config"]: _curve(r) for r in trials.values() if r["seed"] == 0}
    repeats = tuple((main[r["config"]], _curve(r)) for r in trials.values() if r["seed"] != 0 and r["config"] in main)
    # A failed trial (diverged, invalid) keeps the epochs it got; a sweep meets it too.
    curves = tuple(main[i] for i in sorted(main) if main[i].val_acc)
    return Benchmark(
        curves=curves,
        repeats=repeats,
        sessions=sessions,
        import_cpu=tuple(r["import_cpu"] for r in records if r.get("kind") == "worker"),
        source=path,
        epochs=epochs,
    )
