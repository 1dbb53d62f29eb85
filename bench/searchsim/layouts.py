"""Two questions the strategy table leaves open: how workers should share the cores, and how fast any
strategy could possibly be.

**Layouts.** C cores run C workers of one thread or C/2 workers of two. Every duration of a trial
with two threads is its one-thread duration over the measured speed-up (bench/data/mnist5k-threads.json,
``python -m bench.searchsim.threads``), so a replay with C/2 two-thread workers is the replay with
C/2 one-thread workers, its clock divided by the speed-up: no event changes order. The perfect
speed-up (x2) is shown too: if one-thread workers win even against it, no machine's threading makes
the other layout better.

**The floor.** No strategy can reach a target sooner than the fastest configuration that reaches it
does from its own start (start-up plus the epochs until the first one at the target): a sampler that
guessed that configuration first would. The ratio of random search's median to the floor is the
most any strategy could gain at the median.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence

from bench.searchsim.data import Benchmark
from bench.searchsim.report import rank, secs
from bench.searchsim.simulator import Trace
from bench.searchsim.threads import OUT as THREADS_FILE

CORES = (2, 4, 16)
# The replays the layouts need: C one-thread workers and C/2 two-thread ones, for each C.
WORKER_COUNTS = tuple(sorted({k for cores in CORES for k in (cores, cores // 2)}))


def measured_speedup() -> tuple[float, float, float, int]:
    """(median, lowest, highest, configurations) of the 2-thread over 1-thread epoch speed-up."""
    rows = json.loads(THREADS_FILE.read_text(encoding="utf-8"))["rows"]
    ups = [r["speedup"] for r in rows]
    return statistics.median(ups), min(ups), max(ups), len(ups)


def floor(bench: Benchmark, target: float) -> float:
    """CPU seconds from its start until the fastest measured configuration first reaches ``target``."""
    best = math.inf
    for curve in bench.curves:
        elapsed = curve.startup_cpu
        for value, seconds in zip(curve.val_acc, curve.epoch_cpu, strict=False):
            elapsed += seconds
            if value >= target:
                best = min(best, elapsed)
                break
    return best


def _times(traces: Sequence[Trace], target: float, speedup: float) -> tuple[float, float]:
    ts = [tr.time_to(target) / speedup for tr in traces]
    return rank(ts, 0.5), rank(ts, 0.9)


def layouts_table(
    traces: Mapping[tuple[str, int], Sequence[Trace]],
    labels: Mapping[str, str],
    targets: Mapping[float, str],
    speedup: float,
) -> str:
    """Median / p90 seconds to each target for each strategy and layout of ``CORES`` cores."""
    layouts = []
    for cores in CORES:
        layouts += [
            (f"{cores} cores: {cores} workers x 1 thread", cores, 1.0),
            (
                f"{cores} cores: {cores // 2} worker{'s' if cores > 2 else ''} x 2 threads (x{speedup:.2f})",
                cores // 2,
                speedup,
            ),
            (f"{cores} cores: {cores // 2} worker{'s' if cores > 2 else ''} x 2 threads (perfect x2)", cores // 2, 2.0),
        ]
    width = max(len(label) for label in labels.values()) + max(len(name) for name, _, _ in layouts) + 3
    head = f"{'strategy, layout':{width}s}" + "".join(
        f" | {name + ' s: med':>16s} {'p90':>5s}" for name in targets.values()
    )
    lines = [head, "-" * len(head)]
    for name, label in labels.items():
        for layout, k, up in layouts:
            row = f"{label + ' | ' + layout:{width}s}"
            for target in targets:
                med, p90 = _times(traces[(name, k)], target, up)
                row += f" | {secs(med):>16s} {secs(p90):>5s}"
            lines.append(row)
    return "\n".join(lines)
