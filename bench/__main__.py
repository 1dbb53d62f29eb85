"""``python -m bench [NAME ...]``: run the benchmarks and print one table (``search-sim`` = bench_search_sim)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import Row, print_table


def main(argv: list[str]) -> None:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_")
    )
    rows: list[Row] = []
    for name in names:
        name = name.replace("-", "_")  # `python -m bench search-sim` names bench/bench_search_sim.py
        module = importlib.import_module(f"bench.{name if name.startswith('bench_') else 'bench_' + name}")
        print(f"running {module.__name__} ...", file=sys.stderr, flush=True)
        rows += module.run()
    print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
