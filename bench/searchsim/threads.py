"""How much a second CPU thread speeds up one benchmark trial: the evidence for how workers share cores.

    nice -n 0 .venv/bin/python -m bench.searchsim.threads --configs 16   # about 6 minutes, on an idle machine

On C cores a study can run C workers of one thread or fewer workers of several threads. The
simulator (one core per worker) answers the first; this measures what the second buys: for a
sample of the benchmark's configurations (design indices 0, 1, 2, ..., the seed repeats skipped),
the wall seconds of a warm epoch with ``train.threads`` 1, then 2, the better of two epochs each.
The speed-up is the 1-thread time over the 2-thread time; the layout rows of ``python -m bench
search-sim`` (bench/searchsim/layouts.py) divide the clock of two-thread workers by the median.

Wall seconds, not CPU seconds: the point is what two threads give the clock. So the machine
must be idle while this runs; the file records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.searchsim.space import FIXED, REPO

OUT = REPO / "bench" / "data" / "mnist5k-threads.json"
EPOCHS = 3  # epoch 1 warms the allocator and oneDNN's kernel choice; epochs 2 and 3 are timed


def epoch_seconds(index: int, threads: int) -> list[float]:
    """Wall seconds of each epoch of design configuration ``index`` trained with ``threads`` threads."""
    import numpy as np

    from bench.searchsim.generate import SEED, _clock_reporter
    from bench.searchsim.space import bench_sweep, draw
    from flexcnn.config import validate_config
    from flexcnn.overrides import apply_overrides
    from flexcnn.run import run
    from flexcnn.search.study import plan_study

    plan = plan_study(bench_sweep())
    params = draw(plan.space, np.random.default_rng([SEED, index]))
    overrides = {**plan.space.decode(params), **FIXED, "train.epochs": EPOCHS, "train.threads": threads}
    clock = _clock_reporter()
    with tempfile.TemporaryDirectory(prefix="flexcnn-threads-") as tmp:
        config = validate_config(apply_overrides(plan.base_tree, overrides), source="thread benchmark")
        run(config, [clock], run_dir=Path(tmp))
    return [end[1] - start[1] for start, end in zip(clock.starts, clock.ends, strict=True)]


def measure(configs: int) -> dict[str, Any]:
    from bench.searchsim.generate import REPEAT_EVERY, machine

    indices = [i for i in range(configs + configs // REPEAT_EVERY + 1) if i % REPEAT_EVERY != REPEAT_EVERY - 1]
    rows = []
    load_before = os.getloadavg()[0]
    for index in indices[:configs]:
        one = min(epoch_seconds(index, 1)[1:])
        two = min(epoch_seconds(index, 2)[1:])
        rows.append({"config": index, "wall_1": round(one, 4), "wall_2": round(two, 4), "speedup": round(one / two, 3)})
        print(f"config {index}: 1 thread {one:.2f} s/epoch, 2 threads {two:.2f} s/epoch, x{one / two:.2f}", flush=True)
    return {
        "command": f"python -m bench.searchsim.threads --configs {configs}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load1_before": round(load_before, 2),
        "load1_after": round(os.getloadavg()[0], 2),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=16)
    args = parser.parse_args(argv)
    result = measure(args.configs)
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    median = statistics.median(r["speedup"] for r in result["rows"])
    print(f"median speed-up of 2 threads over 1: x{median:.2f} ({OUT.relative_to(REPO)})")


if __name__ == "__main__":
    main()
