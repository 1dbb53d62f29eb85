"""Search strategies replayed on measured learning curves of sweeps/flexcnn.yaml's space.

    python -m bench search-sim                     # from the committed cache: seconds
    python -m bench.bench_search_sim --recompute wandb-bayes,wandb-bayes-hb --jobs 2

Each strategy runs 200 seeded sweeps (fewer where FEWER_SEEDS says) at K = 1, 2 and 8 workers on the benchmark in
bench/data/mnist5k-curves.jsonl.gz (see bench/searchsim). Time is simulated: CPU seconds of
single-threaded trials, one core per worker. Targets are the val/acc that about 1 configuration
in 10 and 1 in 50 reach, read off the benchmark's own measurements. The table gives the median
and 90th percentile of the time to each target (a sweep that misses one by the horizon counts as
infinitely slow, so a p90 of "miss" means more than 10% missed), the ratio random search's
figure / the strategy's (above 1: faster than random search without pruning), and the best val/acc
found by fixed budgets (median and the worst-10% quantile).

FLEXCNN_SIM_RECOMPUTE=all (or a comma list of strategy names) recomputes those replays.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Mapping, Sequence

from bench.common import Row
from bench.searchsim import layouts, report
from bench.searchsim.data import Benchmark, load
from bench.searchsim.runner import Settings, data_hash, replay_all
from bench.searchsim.simulator import Trace
from bench.searchsim.space import REPO
from bench.searchsim.strategies import registry

SEEDS = 200
# The two candidate defaults were cut to 50 seeds to fit a CPU budget on a shared 2-core machine; each
# such row says so. (W&B's GP costs 5-30 s per replay in its bridge: its 1,200 replays took 80 minutes
# with 2 processes.)
FEWER_SEEDS = {"cand-sha3": 50, "cand-median": 50}
KS = (1, 2, 8)
# Budgets and horizon are CPU seconds of all workers together (about 17 per full trial here);
# with K workers they are a K-th of that in simulated wall time.
BUDGETS = (300.0, 1200.0)
HORIZON = 6000.0  # about 350 full trials: a replay that has not reached the 1-in-50 target by then misses
MAX_TRIALS = 2000
BASELINE = "random"
WANDB_FILE = "wandb-bayes-hb"  # what `wandb sweep sweeps/flexcnn.yaml` runs
OURS = {"flexcnn": "default (TPE + asha)", "flexcnn-wandb-rule": "--pruner hyperband (W&B's rule)"}
# How workers share cores: the baseline and the default, also at the K's of layouts.CORES.
LAYOUT_STRATEGIES = (BASELINE, "flexcnn")


def compute(
    names: Sequence[str] | None = None,
    seeds: int = SEEDS,
    recompute: Sequence[str] = (),
    jobs: int = 2,
    fewer: Mapping[str, int] | None = None,
) -> tuple[str, dict[tuple[str, int], report.Summary]]:
    """The table; ``fewer`` gives some strategies fewer seeds than ``seeds`` (default FEWER_SEEDS)."""
    bench = load()
    all_strategies = registry()
    names = list(names or all_strategies)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    if "all" in recompute:
        recompute = names
    t10, t50 = bench.target(10), bench.target(50)
    settings = Settings(
        data=data_hash(bench.source), stop_value=t50, min_time=max(BUDGETS), horizon=HORIZON, max_trials=MAX_TRIALS
    )
    counts = {n: min(seeds, (FEWER_SEEDS if fewer is None else fewer).get(n, seeds)) for n in names}
    traces = {}
    for count in sorted(set(counts.values()), reverse=True):  # the full-seed strategies first
        group = [n for n in names if counts[n] == count]
        traces.update(replay_all(bench.source, settings, group, KS, range(count), recompute=recompute, jobs=jobs))
    summaries = {
        (n, k): report.summarise([traces[(n, k, s)] for s in range(counts[n])], (t10, t50), [b / k for b in BUDGETS])
        for n in names
        for k in KS
    }
    labels = {n: all_strategies[n].label + (f" [{counts[n]} seeds]" if counts[n] != seeds else "") for n in names}
    head = (
        f"search-sim: {seeds} seeds per strategy and K (fewer where a row says); {len(bench.curves)} measured "
        f"configurations of sweeps/flexcnn.yaml on mnist5k ({bench.source.name}); time = CPU seconds of one-thread "
        f"trials, one core per worker\n"
        f"targets: val/acc >= {t10:.4f} (1 in 10: {bench.reach_fraction(t10):.1%} of configurations reach it), "
        f">= {t50:.4f} (1 in 50: {bench.reach_fraction(t50):.1%}); x = random's time / this strategy's"
    )
    targets = {t10: "1-in-10", t50: "1-in-50"}
    body = report.table(summaries, labels, KS, targets, BUDGETS, baseline=BASELINE)
    layout_names = [n for n in LAYOUT_STRATEGIES if n in names]
    extra_ks = [k for k in layouts.WORKER_COUNTS if k not in KS]
    traces.update(
        replay_all(bench.source, settings, layout_names, extra_ks, range(seeds), recompute=recompute, jobs=jobs)
    )
    by_k = {(n, k): [traces[(n, k, s)] for s in range(seeds)] for n in layout_names for k in layouts.WORKER_COUNTS}
    return head + "\n" + body + "\n\n" + _layouts_and_floor(bench, by_k, labels, targets), summaries


def _layouts_and_floor(
    bench: Benchmark, by_k: dict[tuple[str, int], list[Trace]], labels: dict[str, str], targets: dict[float, str]
) -> str:
    """The layout table (how workers share cores) and the floor no strategy can beat."""
    median, low, high, n = layouts.measured_speedup()
    shown = {name: labels[name] for name in LAYOUT_STRATEGIES if name in labels}
    lines = [
        f"How workers share cores: two threads made an epoch x{median:.2f} faster at the median "
        f"(x{low:.2f}..x{high:.2f} over {n} configurations, {layouts.THREADS_FILE.relative_to(REPO)}); "
        "C/2 two-thread workers are the C/2-worker replays with the clock divided by that",
        layouts.layouts_table(by_k, shown, targets, median),
        "",
        "The floor: the fastest measured configuration reaches the target this soon after its own start; no "
        "strategy can be sooner, so random search's median over it is the most any strategy could gain there",
    ]
    for target, name in targets.items():
        least = layouts.floor(bench, target)
        medians = {k: report.rank([t.time_to(target) for t in by_k[(BASELINE, k)]], 0.5) for k in KS}
        gains = ", ".join(f"K={k} {med / least:.1f}x" for k, med in medians.items())
        lines.append(f"  {name} (val/acc >= {target:.4f}): {least:.1f} s; the most any strategy can gain: {gains}")
    return "\n".join(lines)


def run() -> list[Row]:
    recompute = [n for n in os.environ.get("FLEXCNN_SIM_RECOMPUTE", "").split(",") if n]
    text, summaries = compute(recompute=recompute)
    print(text, flush=True)
    bench = load()
    targets = {10: bench.target(10), 50: bench.target(50)}
    against_random = {"median": ">=3x", "p90": ">=2x"}
    rows = []
    for name, what in OURS.items():
        rows += _time_rows(
            summaries, f"sim {what}", name, BASELINE, "random search, no pruning", targets, against_random
        )
    # The default against W&B's own engine on the same sweep file: the aim is no worse at either quantile.
    versus_wandb = {"median": ">=1x", "p90": ">=1x"}
    rows += _time_rows(
        summaries,
        "sim default vs W&B",
        "flexcnn",
        WANDB_FILE,
        "W&B bayes + hyperband, the sweep file",
        targets,
        versus_wandb,
    )
    return rows


def _time_rows(
    summaries: dict[tuple[str, int], report.Summary],
    title: str,
    ours: str,
    theirs: str,
    baseline: str,
    targets: dict[int, float],
    aims: dict[str, str],
) -> list[Row]:
    """Median and p90 time to each target at K = 2 and 8, ``ours`` against ``theirs``."""
    rows = []
    for k, (one_in, target), (i, (q, aim)) in itertools.product((2, 8), targets.items(), enumerate(aims.items())):
        rows.append(
            Row(
                f"{title}: {q} time to 1-in-{one_in} target, K={k}",
                summaries[(ours, k)].times[target][i],
                summaries[(theirs, k)].times[target][i],
                "s",
                f"{baseline} (simulated)",
                aim=aim,
                higher_is_better=False,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="replay sweeps on the learning-curve benchmark")
    parser.add_argument("--strategies", default="", help="comma list (default: all)")
    parser.add_argument("--recompute", default="", help="comma list of strategies to replay again, or 'all'")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--jobs", type=int, default=2, help="replay processes side by side")
    parser.add_argument(
        "--fewer-seeds",
        default=",".join(f"{n}={c}" for n, c in FEWER_SEEDS.items()),
        help="NAME=SEEDS,... strategies replayed over fewer seeds (W&B's GP is slow)",
    )
    args = parser.parse_args(argv)
    text, _ = compute(
        names=[n for n in args.strategies.split(",") if n] or None,
        seeds=args.seeds,
        recompute=[n for n in args.recompute.split(",") if n],
        jobs=args.jobs,
        fewer={n: int(c) for n, _, c in (p.partition("=") for p in args.fewer_seeds.split(",") if p)},
    )
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
