"""Replay a sweep with K parallel workers in simulated time: an event queue of epoch ends.

Time is CPU seconds of a single-threaded trial as measured (see generate.py): K workers on K
idle cores. Each worker, when free, asks the engine for a trial (the other workers' trials still
RUNNING, with every value they reported so far), then pays the measured start-up, each epoch,
and for a completed trial the final test evaluation. At each epoch end the value is reported;
the engine may stop that trial (Optuna's ``should_prune``) or any running one (W&B's
``stop_runs``); a stopped trial's worker is free at that moment and asks again. Events at the
same moment are handled in the order they were scheduled, so a replay is deterministic.

The result is a trace of the best val/acc seen so far (a best.pt that good exists then), from
which time to any target and the best value at any budget are read.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

from bench.searchsim.engines import Engine
from bench.searchsim.surrogate import SimCurve, Surrogate


@dataclass
class Trace:
    improvements: list[tuple[float, float]] = field(default_factory=list)  # (time, best so far) as it rose
    end: float = 0.0  # simulated time at which the replay stopped
    trials: int = 0
    pruned: int = 0
    epochs: int = 0

    def time_to(self, target: float) -> float:
        """Seconds until some epoch reached ``target``; inf when it never did before ``end``."""
        return next((t for t, v in self.improvements if v >= target), math.inf)

    def best_at(self, budget: float) -> float:
        """The best val/acc seen by ``budget`` seconds; NaN when no epoch had ended."""
        seen = [v for t, v in self.improvements if t <= budget]
        return seen[-1] if seen else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "improvements": [[round(t, 3), v] for t, v in self.improvements],
            "end": round(self.end, 3),
            "trials": self.trials,
            "pruned": self.pruned,
            "epochs": self.epochs,
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Trace:
        return cls(
            improvements=[(float(t), float(v)) for t, v in d["improvements"]],  # type: ignore[union-attr]
            end=float(d["end"]),  # type: ignore[arg-type]
            trials=int(d["trials"]),  # type: ignore[call-overload]
            pruned=int(d["pruned"]),  # type: ignore[call-overload]
            epochs=int(d["epochs"]),  # type: ignore[call-overload]
        )


@dataclass
class _Running:
    worker: int
    curve: SimCurve
    done: int = 0  # epochs finished
    alive: bool = True


def simulate(
    engine: Engine,
    surrogate: Surrogate,
    workers: int,
    *,
    stop_value: float,
    min_time: float,
    horizon: float,
    max_trials: int = 2000,
) -> Trace:
    """Run until the best reaches ``stop_value`` and ``min_time`` has passed, or ``horizon``/``max_trials``."""
    epochs = surrogate.epochs
    trace = Trace()
    best = -math.inf
    heap: list[tuple[float, int, str, int]] = []
    order = itertools.count()
    running: dict[int, _Running] = {}

    def start(worker: int, now: float) -> None:
        if trace.trials >= max_trials:
            return
        trial, params = engine.ask(worker)
        curve = surrogate.curve(params)
        running[trial] = _Running(worker, curve)
        trace.trials += 1
        heapq.heappush(heap, (now + curve.startup_cpu + curve.epoch_cpu[0], next(order), "epoch", trial))

    def stop(trial: int, now: float) -> None:
        r = running.pop(trial)
        r.alive = False
        trace.pruned += 1
        engine.tell(trial, "pruned", None)
        start(r.worker, now)

    for w in range(workers):
        start(w, 0.0)
    now = 0.0
    while heap:
        now, _, kind, trial = heapq.heappop(heap)
        if now > horizon or (best >= stop_value and now >= min_time):
            break
        r = running.get(trial)
        if r is None or not r.alive:
            continue  # stopped meanwhile
        if kind == "end":
            del running[trial]
            engine.tell(trial, "complete", max(r.curve.val_acc[: r.done]))
            start(r.worker, now)
            continue
        value = r.curve.val_acc[r.done]
        r.done += 1
        trace.epochs += 1
        if value > best:
            best = value
            trace.improvements.append((now, value))
        to_stop = engine.report(trial, r.done, value)
        if trial not in to_stop:
            if r.done < len(r.curve.val_acc) and r.done < epochs:
                heapq.heappush(heap, (now + r.curve.epoch_cpu[r.done], next(order), "epoch", trial))
            elif r.done >= epochs:
                heapq.heappush(heap, (now + r.curve.final_cpu, next(order), "end", trial))
            else:  # a measured trial that failed after this epoch (diverged): it fails here too
                del running[trial]
                engine.tell(trial, "failed", None)
                start(r.worker, now)
        for other in to_stop:
            if other in running:
                stop(other, now)
    trace.end = min(now, horizon)
    engine.close()
    return trace
