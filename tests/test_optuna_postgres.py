"""The many-machines path on a real PostgreSQL: parallel workers, and heartbeats that retry a killed worker's trial.

The fixture starts a throwaway cluster (tests/postgres.py); when the server is
not installed the tests fail, they never skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from flexcnn.search.storage import with_driver
from tests.helpers import write_sweep
from tests.postgres import PostgresCluster, postgres  # noqa: F401  (the fixture)
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
