"""A study in a few lines: trials by state, the leaderboard, and for several objectives the Pareto front.

A single-objective study ranks its COMPLETE trials by the metric. A study of
several objectives (val/acc against parameters, latency) has no single best
trial: its result is the Pareto front, the trials no other trial beats on
every objective at once (Optuna's ``study.best_trials``), listed here best
metric first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flexcnn.search.space import format_value

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, in a fixed order (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in STATES}


@dataclass
class LeaderRow:
    rank: int
    number: int
    value: float  # the metric (the first objective)
    epochs: int | None
    best_epoch: int | None
    seconds: float | None
    params: dict[str, Any]
    test_acc: float | None
    values: tuple[float, ...] = field(default_factory=tuple)  # every objective, in the study's order


def _row(rank: int, t: FrozenTrial) -> LeaderRow:
    duration = t.duration.total_seconds() if t.duration is not None else None
    summary = t.user_attrs.get("summary") or {}
    values = tuple(float(v) for v in (t.values or ()))
    return LeaderRow(
        rank=rank,
        number=t.number,
        value=values[0],
        epochs=t.user_attrs.get("epochs"),
        best_epoch=t.user_attrs.get("best_epoch"),
        seconds=duration,
        params=t.user_attrs.get("params") or dict(t.params),
        test_acc=t.user_attrs.get("test/acc", summary.get("test/acc")),
        values=values,
    )


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if t.values and all(math.isfinite(v) for v in t.values)]


def leaderboard(study: optuna.Study, top: int = 10) -> list[LeaderRow]:
    """The ``top`` COMPLETE trials, best first; for several objectives, the Pareto front by the metric."""
    if len(study.directions) > 1:
        return pareto_front(study, top)
    trials = _complete(study)
    reverse = study.direction.name == "MAXIMIZE"
    trials.sort(key=lambda t: (t.values[0], -t.number) if reverse else (-t.values[0], -t.number), reverse=True)
    return [_row(rank, t) for rank, t in enumerate(trials[:top], start=1)]


def pareto_front(study: optuna.Study, top: int | None = None) -> list[LeaderRow]:
    """The trials on the Pareto front (``study.best_trials``), best metric first, then by trial number."""
    front = [t for t in study.best_trials if t.values and all(math.isfinite(v) for v in t.values)]
    maximize = study.directions[0].name == "MAXIMIZE"
    front.sort(key=lambda t: (-t.values[0] if maximize else t.values[0], t.number))
    return [_row(rank, t) for rank, t in enumerate(front[:top] if top else front, start=1)]


def format_leaderboard(rows: list[LeaderRow], metric: str | Sequence[str]) -> str:
    """A plain-text table; parameter names are shortened to their last part when that is unambiguous.

    ``metric`` is the metric's name, or every objective's name for a study of several.
    """
    if not rows:
        return "no completed trials yet"
    names = [metric] if isinstance(metric, str) else list(metric)
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    short = {n: n.rsplit(".", 1)[-1] for n in params}
    if len(set(short.values())) != len(short):
        short = {n: n for n in params}
    header = ["rank", "trial", *names, "test/acc", "epochs", "secs", *short.values()]
    lines = [header]
    for r in rows:
        values = r.values or (r.value,)
        lines.append(
            [
                str(r.rank),
                str(r.number),
                *(format_objective(v) for v in values[: len(names)]),
                f"{r.test_acc:.4f}" if r.test_acc is not None else "-",
                f"{r.best_epoch}/{r.epochs}" if r.epochs else "-",
                f"{r.seconds:.1f}" if r.seconds is not None else "-",
                *(format_value(r.params[n]) if n in r.params else "-" for n in params),
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_objective(value: float) -> str:
    """An objective's value: metrics with 4 decimals, parameter counts whole (16,490), latencies with 3 digits."""
    if value.is_integer() and abs(value) >= 10:
        return f"{int(value):,}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.3g}"


def format_counts(counts: dict[str, int], n_trials: int | None = None) -> str:
    """``COMPLETE 7  PRUNED 5  FAIL 0  RUNNING 0  WAITING 0  (12/12 finished)``."""
    finished = counts["COMPLETE"] + counts["PRUNED"]
    goal = f"{finished}/{n_trials}" if n_trials else str(finished)
    return "  ".join(f"{k} {v}" for k, v in counts.items()) + f"  ({goal} finished)"
