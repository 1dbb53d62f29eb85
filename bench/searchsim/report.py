"""Time to target and best value at fixed budgets, per strategy and K, against the random baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.searchsim.simulator import Trace


def rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (an observed value; safe with inf, which a miss counts as)."""
    xs = sorted(values)
    return xs[max(0, math.ceil(q * len(xs)) - 1)]


@dataclass(frozen=True)
class Summary:
    """One strategy at one K over all seeds."""

    times: dict[float, tuple[float, float]]  # target -> (median, p90) seconds to reach it
    missed: dict[float, int]  # target -> seeds that never reached it
    best: dict[float, tuple[float, float]]  # budget -> (median, p10) best val/acc by then
    trials: float  # mean trials started per replay
    pruned: float  # mean share of them stopped early


def summarise(traces: Sequence[Trace], targets: Sequence[float], budgets: Sequence[float]) -> Summary:
    times, missed, best = {}, {}, {}
    for target in targets:
        ts = [tr.time_to(target) for tr in traces]
        times[target] = (rank(ts, 0.5), rank(ts, 0.9))
        missed[target] = sum(math.isinf(t) for t in ts)
    for budget in budgets:
        vs = [tr.best_at(budget) for tr in traces]
        vs = [v if math.isfinite(v) else 0.0 for v in vs]  # no epoch ended yet: nothing found
        best[budget] = (rank(vs, 0.5), rank(vs, 0.1))
    trials = sum(tr.trials for tr in traces) / len(traces)
    pruned = sum(tr.pruned / max(tr.trials, 1) for tr in traces) / len(traces)
    return Summary(times, missed, best, trials, pruned)


def secs(t: float) -> str:
    return "miss" if math.isinf(t) else f"{t:.0f}"


def _ratio(base: float, t: float) -> str:
    if math.isinf(t):
        return "0" if not math.isinf(base) else "-"
    return f"{base / t:.2f}" if not math.isinf(base) else "inf"


def table(
    results: Mapping[tuple[str, int], Summary],
    labels: Mapping[str, str],
    ks: Sequence[int],
    targets: Mapping[float, str],
    budgets: Sequence[float],
    baseline: str,
) -> str:
    """One block per K: a row per strategy; times, their ratios to ``baseline`` (x: baseline / this).

    ``budgets`` are CPU seconds of all workers together: K workers reach them at a K-th of that.
    """
    width = max(len(v) for v in labels.values())
    head = f"{'strategy':{width}s}"
    for name in targets.values():
        head += f" | {name + ' s: med':>16s} {'p90':>5s} {'x med':>5s} {'x p90':>5s}"
    for b in budgets:
        head += f" | {'best@' + _budget(b) + ': med':>17s} {'p10':>6s}"
    head += f" | {'trials':>6s} {'stopped':>7s}"
    lines = []
    for k in ks:
        base = results[(baseline, k)]
        lines += ["", f"K = {k} worker{'s' if k > 1 else ''}", head, "-" * len(head)]
        for name, label in labels.items():
            s = results.get((name, k))
            if s is None:
                continue
            row = f"{label:{width}s}"
            for target in targets:
                med, p90 = s.times[target]
                bmed, bp90 = base.times[target]
                miss = f"({s.missed[target]} miss)" if s.missed[target] else ""
                cells = (secs(med), secs(p90), _ratio(bmed, med), _ratio(bp90, p90))
                row += f" | {miss:>9s} {cells[0]:>6s} {cells[1]:>5s} {cells[2]:>5s} {cells[3]:>5s}"
            for b in budgets:
                med, p10 = s.best[b / k]
                row += f" | {med:>17.4f} {p10:>6.4f}"
            row += f" | {s.trials:>6.0f} {s.pruned:>7.0%}"
            lines.append(row)
    return "\n".join(lines)


def _budget(seconds: float) -> str:
    return f"{seconds / 60:.0f}cpu-min" if seconds >= 60 else f"{seconds:.0f}cpu-s"
