"""The benchmark scripts still run against the current code (figures are not asserted: they live in bench/).

``make bench-gpu`` is run only by a session that is lent a GPU, and the curve generator only when the
benchmark is re-measured, so nothing else would notice a rename that breaks them: the refactor of
issue 12 broke both (``default_workers``, ``BaseReporter``, ``search.space.apply_overrides``).
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_bench_gpu_runs_its_sections_on_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "section failed" not in result.stdout
    assert "resident" in result.stdout and "trials on one cpu" in result.stdout


def test_the_curve_generator_measures_a_trial() -> None:
    from bench.searchsim.generate import run_trial
    from bench.searchsim.space import EPOCHS, bench_sweep
    from flexcnn.search.study import plan_study

    plan = plan_study(bench_sweep())
    record = run_trial(4, plan.base_tree, plan.space)  # configuration 4: about a second per epoch
    assert record["status"] == "completed", record["reason"]
    assert len(record["epochs"]) == EPOCHS
    assert all(0.0 <= e["val_acc"] <= 1.0 and e["cpu"] > 0 for e in record["epochs"])
    assert record["total_cpu"] >= sum(e["cpu"] for e in record["epochs"])


def test_the_thread_benchmark_times_a_warm_epoch() -> None:
    from bench.searchsim.threads import EPOCHS, epoch_seconds

    seconds = epoch_seconds(4, 1)
    assert len(seconds) == EPOCHS and all(s > 0 for s in seconds)
