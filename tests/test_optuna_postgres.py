"""The many-machines path on a real PostgreSQL: parallel workers, and heartbeats that retry a killed worker's trial.

The fixture starts a throwaway cluster (tests/postgres.py); when the server is
not installed the tests fail, they never skip.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from flexcnn.search.storage import with_driver
from tests.helpers import write_sweep
from tests.postgres import PostgresCluster, fresh_database, postgres  # noqa: F401  (the fixture)
from tests.test_optuna_study import (
    assert_sound,
    flexcnn_cmd,
    kill_a_worker_mid_trial_then_check_the_retry,
    load,
)

pytestmark = pytest.mark.postgres


def test_the_fixture_is_a_real_postgresql(postgres: PostgresCluster) -> None:  # noqa: F811
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_driver(postgres.url))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select version()")).scalar().startswith("PostgreSQL")
    engine.dispose()


def test_two_workers_on_postgresql(tmp_path: Path, postgres: PostgresCluster) -> None:  # noqa: F811
    sweep = write_sweep(
        tmp_path,
        {
            "optim.lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 3e-2},
            "model.activation": {"values": ["relu", "gelu"]},
        },
        method="bayes",
    )
    n = 6
    out = subprocess.run(
        flexcnn_cmd(
            "optuna",
            "run",
            str(sweep),
            "--study",
            "pg",
            "--storage",
            postgres.url,
            "--n-trials",
            str(n),
            "--workers",
            "2",
        ),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    study = load(postgres.url, "pg")
    assert_sound(study, n, workers=2)
    assert len({t.user_attrs["worker"]["pid"] for t in study.get_trials()}) == 2
    # The storage is the one the workers wrote: optuna reads the same trials with its own RDBStorage.
    direct = optuna.load_study(study_name="pg", storage=with_driver(postgres.url))
    assert [t.number for t in direct.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))] == [
        t.number for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    ]


def test_killed_worker_trial_is_retried_on_postgresql(tmp_path: Path, postgres: PostgresCluster) -> None:  # noqa: F811
    kill_a_worker_mid_trial_then_check_the_retry(tmp_path, postgres.url, "pgkill")


# One of four worker processes for the rounds below. Python, torch and flexcnn are imported once, before the
# first round; each round then runs the real `flexcnn optuna worker` command line (its storage from
# FLEXCNN_STORAGE, as in compose and Kubernetes) the moment the test says go, so the four open the empty
# database, create the study and claim trials at the same instant, not seconds apart as imports finish.
FOUR_AT_ONCE = """
import os, sys, time
from pathlib import Path
import flexcnn.run  # noqa: F401
from flexcnn.cli import main

folder, index, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(folder / f"ready-{index}").touch()
for r in range(rounds):
    go = folder / f"go-{r}"
    while not go.exists():
        time.sleep(0.001)
    os.environ["FLEXCNN_STORAGE"] = go.read_text()
    args = ["optuna", "worker", str(folder / "sweep.yaml"), "--study", "together", "--worker-index", index]
    args += ["--threads", "1", "--output-dir", str(folder / f"runs-{r}")]
    try:
        main(args)
    except SystemExit as exc:
        (folder / f"exit-{r}-{index}").write_text(str(exc.code))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_four_workers_started_together_on_a_fresh_database_all_finish_ten_times_over(
    tmp_path: Path,
    postgres: PostgresCluster,  # noqa: F811
) -> None:
    # Ten fresh databases, four workers started at one instant on each: once one in three crashed with
    # "duplicate key value violates unique constraint" creating Optuna's tables, and about one run in six
    # ended a trial over the budget. Now every worker exits 0 and each study has exactly its budget.
    workers, rounds, budget = 4, 10, 6
    write_sweep(
        tmp_path,
        {
            "optim.lr": {"distribution": "log_uniform_values", "min": 3e-3, "max": 3e-2},
            "train.epochs": {"value": 1},
            "data.limit": {"value": 200},
            "model.num_filters": {"value": [8]},
        },
        run_cap=budget,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FOUR_AT_ONCE, str(tmp_path), str(k), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(workers)
    ]
    try:
        _wait_for(tmp_path, "ready-*", workers, procs)
        for r in range(rounds):
            url = fresh_database(postgres, f"round{r}")
            go = tmp_path / f"go-{r}"
            go.with_suffix(".tmp").write_text(url)
            go.with_suffix(".tmp").rename(go)  # all at once, never half written
            _wait_for(tmp_path, f"exit-{r}-*", workers, procs)
            codes = {p.name: p.read_text() for p in sorted(tmp_path.glob(f"exit-{r}-*"))}
            assert set(codes.values()) == {"0"}, (r, codes, _outputs(procs))
            study = load(url, "together")
            assert_sound(study, budget, workers=workers)
            trials = study.get_trials()
            assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, (r, trials)
            assert sorted(t.number for t in trials) == list(range(budget)), r
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


def _wait_for(folder: Path, pattern: str, count: int, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 300
    while len(list(folder.glob(pattern))) < count:
        assert all(p.poll() is None for p in procs), _outputs(procs)
        assert time.monotonic() < deadline, f"timed out waiting for {count} x {pattern}"
        time.sleep(0.05)


def _outputs(procs: list[subprocess.Popen[str]]) -> str:
    """What the worker processes printed (only called once something went wrong: this ends them)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    return "\n".join(p.communicate()[0] for p in procs)
