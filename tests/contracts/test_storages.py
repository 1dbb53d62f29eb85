"""One suite of study behaviours, run against every storage kind flexcnn supports.

In the manner of Optuna's ``StorageTestCase`` (optuna/testing/pytest_storages.py):
each case is written once against a storage URL, and the ``storage_url``
fixture hands out one per kind in ``flexcnn.search.storage.STORAGE_KINDS``: a
journal file, an SQLite file, and a fresh database on a throwaway PostgreSQL
cluster (tests/postgres.py; it must run, never skip). A kind added to that list
fails here until it gets a fixture below.

Storage-level cases drive a trivial objective through Optuna's API but go
through flexcnn's own code wherever flexcnn touches the storage (parse, open,
plan/open/join a study, reap and re-queue, counts and leaderboard); one case
per storage runs a real tiny training trial through ``flexcnn optuna worker``'s
loop. Every case reads the study back through a storage opened afresh, as
another worker or ``flexcnn optuna status`` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from flexcnn.cli import cli
from flexcnn.errors import ConfigError, UserError
from flexcnn.search.objective import HOST
from flexcnn.search.reaping import recover_lost_trials
from flexcnn.search.storage import STORAGE_KINDS, open_storage, parse_storage
from flexcnn.search.study import (
    format_counts,
    join_plan,
    leaderboard,
    load_study,
    open_study,
    peek_settings,
    state_counts,
    stored_settings,
)
from flexcnn.search.sweep_file import load_sweep
from flexcnn.search.workers import WorkerOptions, run_worker
from tests import helpers
from tests.postgres import fresh_database, postgres  # noqa: F401  (the fixture)

# The shared tiny study, on 200 images: storage cases need speed, not accuracy.
BASE = {**helpers.STUDY_BASE, "data": {**helpers.STUDY_BASE["data"], "limit": 200}}

pytestmark = pytest.mark.timeout(300)

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "activation": CategoricalDistribution(["relu", "gelu"])}


def _kind_param(name: str) -> Any:
    return pytest.param(name, marks=[pytest.mark.postgres] if name == "postgresql" else [], id=name)


@pytest.fixture(params=[_kind_param(kind.name) for kind in STORAGE_KINDS])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty storage of each kind, as a user would give it to ``--storage``."""
    kind = request.param
    if kind == "journal":
        url = str(tmp_path / "study.log")
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    elif kind == "postgresql":
        url = fresh_database(request.getfixturevalue("postgres"), f"contract_{uuid.uuid4().hex[:12]}")
    else:
        pytest.fail(f"storage kind {kind!r} (flexcnn.search.storage.STORAGE_KINDS) has no fixture in {__file__}")
    assert parse_storage(url).family == kind
    return url


def reopen(url: str, heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """The storage as another process sees it: opened afresh from its URL (it must exist by now)."""
    spec = parse_storage(url)
    return open_storage(spec, heartbeat=heartbeat if spec.has_heartbeat else None, create=False)


def write_sweep(folder: Path, parameters: dict[str, Any], **extra: Any) -> Path:
    """The shared sweep writer on this suite's smaller base."""
    return helpers.write_sweep(folder, parameters, base=BASE, **extra)


def dead_pid() -> int:
    """The pid of a process on this host that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- the suite


def test_a_study_planned_by_flexcnn_is_found_again_with_its_settings(storage_url: str, tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 3e-3]}}, run_cap=3))
    plan = join_plan(open_storage(parse_storage(storage_url)), "s", sweep)
    open_study(open_storage(parse_storage(storage_url)), "s", plan)

    # Another worker, with nothing on its command line, gets the stored sampler, pruner and budget.
    storage = reopen(storage_url)
    assert peek_settings(storage, "s") == plan.settings
    joined = join_plan(storage, "s", sweep)
    assert joined.settings == plan.settings and joined.settings.n_trials == 3
    study = load_study(storage, "s")
    assert stored_settings(study) == plan.settings and study.direction.name == "MAXIMIZE"
    assert optuna.get_all_study_names(storage) == ["s"]

    # `run --n-trials` extends the stored budget; the next reader sees it.
    bigger = join_plan(storage, "s", sweep, n_trials=5)
    open_study(storage, "s", bigger, update_budget=True)
    assert peek_settings(reopen(storage_url), "s").n_trials == 5  # type: ignore[union-attr]

    # A sweep with another search space is refused, and an unknown study is named as missing.
    other = load_sweep(write_sweep(tmp_path / "other", {"optim.lr": {"values": [0.1]}}, run_cap=3))
    with pytest.raises(ConfigError, match="search space"):
        open_study(storage, "s", join_plan(storage, "s", other))
    with pytest.raises(UserError, match=r"no study named 'nope'.*studies there: s"):
        load_study(reopen(storage_url), "nope")


def test_trials_from_two_workers_are_all_recorded_exactly_once(storage_url: str) -> None:
    optuna.create_study(study_name="two", storage=open_storage(parse_storage(storage_url)), direction="maximize")
    per_worker = 6
    errors: list[BaseException] = []

    def worker(label: str) -> None:
        try:  # each worker with its own storage object, as separate processes have
            study = optuna.load_study(study_name="two", storage=open_storage(parse_storage(storage_url)))

            def objective(trial: optuna.Trial) -> float:
                trial.set_user_attr("worker", label)
                return trial.suggest_float("x", 0.0, 1.0)

            study.optimize(objective, n_trials=per_worker)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{k}",)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors

    trials = optuna.load_study(study_name="two", storage=reopen(storage_url)).get_trials()
    assert sorted(t.number for t in trials) == list(range(2 * per_worker))  # none lost, none twice
    assert len({t._trial_id for t in trials}) == len(trials)
    assert all(t.state == TrialState.COMPLETE and t.value == t.params["x"] for t in trials)
    assert Counter(t.user_attrs["worker"] for t in trials) == {"w0": per_worker, "w1": per_worker}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_running_trial_whose_worker_died_is_failed_and_requeued_with_its_params(storage_url: str) -> None:
    spec = parse_storage(storage_url)
    # Heartbeat storages notice a dead worker by its silence; give them the shortest beat flexcnn allows.
    study = optuna.create_study(
        study_name="dead", storage=open_storage(spec, heartbeat=1 if spec.has_heartbeat else None)
    )
    trial = study.ask(SPACE)
    trial.set_user_attr("worker", {"host": HOST, "pid": dead_pid(), "label": "w9"})
    trial.report(0.25, step=1)
    if spec.has_heartbeat:
        study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        # Past the grace period of three missed one-second beats, on clocks that SQLite keeps in whole seconds.
        time.sleep(4.5)

    # Another worker looks, the way its trial loop does on this storage.
    survivor = optuna.load_study(study_name="dead", storage=reopen(storage_url, heartbeat=1))
    lines: list[str] = []
    for _ in range(2):  # a second look changes nothing: one copy, not two
        recover_lost_trials(
            survivor, survivor.get_trials(deepcopy=False), heartbeat=spec.has_heartbeat, say=lines.append, label="w1"
        )

    trials = {t.number: t for t in optuna.load_study(study_name="dead", storage=reopen(storage_url)).get_trials()}
    assert trials[trial.number].state == TrialState.FAIL
    (copy,) = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert copy.params == trials[trial.number].params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(copy) == trial.number
    assert copy.intermediate_values == {1: 0.25}  # it resumes where the dead one left off

    # The next trial a worker runs is that copy, with the same parameters.
    survivor.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1)
    resumed = optuna.load_study(study_name="dead", storage=reopen(storage_url)).get_trials()[copy.number]
    assert resumed.state == TrialState.COMPLETE and resumed.params["lr"] == copy.params["lr"]


def test_user_attrs_and_intermediate_values_round_trip(storage_url: str) -> None:
    attrs = {
        "worker": {"host": HOST, "pid": 1234, "label": "w0"},
        "params": {"optim.lr": 0.003, "model.num_filters": [8, 16], "model.activation": "gelu"},
        "config": {"model": {"kind": "flexible_cnn", "dense_units": [32]}, "data": {"root": None}},
        "summary": {"test/acc": 0.875, "seconds": 12.5},
        "status": "completed",
        "resumed_from": None,
    }
    curve = {1: 0.5, 2: 0.0, 3: 0.8125}
    study = optuna.create_study(study_name="attrs", storage=open_storage(parse_storage(storage_url)))
    study.set_user_attr("flexcnn", {"metric": "val/acc", "n_trials": 4, "target": None})

    def objective(trial: optuna.Trial) -> float:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for step, value in curve.items():
            trial.report(value, step)
        return 0.8125

    study.optimize(objective, n_trials=1)
    back = optuna.load_study(study_name="attrs", storage=reopen(storage_url))
    assert back.user_attrs["flexcnn"] == {"metric": "val/acc", "n_trials": 4, "target": None}
    (trial,) = back.get_trials()
    assert trial.user_attrs == attrs
    assert trial.intermediate_values == curve
    assert trial.value == 0.8125


def test_best_trial_and_state_counts_agree(storage_url: str) -> None:
    study = optuna.create_study(
        study_name="counts", storage=open_storage(parse_storage(storage_url)), direction="maximize"
    )
    for x in (3, 7, 1, 9, 5):
        study.enqueue_trial({"x": x})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_int("x", 0, 9)
        trial.report(x / 10, step=1)
        if x == 9:
            raise optuna.TrialPruned
        if x == 5:
            raise ValueError("a failing trial")
        return x / 10

    study.optimize(objective, n_trials=5, catch=(ValueError,))
    study.ask({"x": optuna.distributions.IntDistribution(0, 9)})  # left RUNNING
    study.enqueue_trial({"x": 2})  # left WAITING

    back = optuna.load_study(study_name="counts", storage=reopen(storage_url))
    counts = state_counts(back)
    assert counts == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 1}
    assert sum(counts.values()) == len(back.get_trials())
    assert format_counts(counts, 10).endswith("(4/10 finished)")
    rows = leaderboard(back, top=10)
    assert [row.value for row in rows] == [0.7, 0.3, 0.1]
    assert rows[0].number == back.best_trial.number and back.best_value == 0.7


def test_a_real_trial_through_the_worker_loop_is_recorded_and_reported(storage_url: str, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, {"optim.lr": {"values": [0.01]}}, method="grid")
    opts = WorkerOptions(sweep_path=sweep, study_name="tiny", storage=storage_url, threads=1, heartbeat=5)
    lines: list[str] = []
    report = run_worker(opts, say=lines.append)
    assert report.exit_code == 0 and report.ran == Counter({"COMPLETE": 1}), lines

    (trial,) = optuna.load_study(study_name="tiny", storage=reopen(storage_url)).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.params == {"optim.lr": 0.01}
    assert trial.user_attrs["params"] == {"optim.lr": 0.01} and trial.user_attrs["epochs"] == 2
    assert trial.user_attrs["config"]["optim"]["lr"] == 0.01
    assert sorted(trial.intermediate_values) == [1, 2]  # one val/acc per epoch, for the pruner
    assert trial.value == max(trial.intermediate_values.values())  # the best epoch's, as best.pt holds
    history = [json.loads(line) for line in (Path(trial.user_attrs["run_dir"]) / "metrics.jsonl").open()]
    assert [row["epoch"] for row in history] == [1, 2]

    status = CliRunner().invoke(cli, ["optuna", "status", "--storage", storage_url, "--study", "tiny"])
    assert status.exit_code == 0, status.output
    assert "tiny: COMPLETE 1  PRUNED 0  FAIL 0  RUNNING 0  WAITING 0  (1/1 finished)" in status.output
    assert f"best val/acc {trial.value:.4f}" in status.output
    # A worker joining the finished study finds nothing left to do.
    again = run_worker(opts, say=lines.append)
    assert sum(again.ran.values()) == 0 and again.reason == "the study has 1 finished trials (budget 1)"


# What each of the processes below runs: open the empty storage, create or join the study, and claim and
# run trials (a trivial objective) until the budget is full, all starting at one moment (a file barrier).
TOGETHER = """
import sys, time
from pathlib import Path
from optuna.trial import TrialState
from flexcnn.search.claims import BudgetFull, budgeted_study
from flexcnn.search.storage import open_storage, parse_storage
from flexcnn.search.study import join_plan, open_study
from flexcnn.search.sweep_file import load_sweep

url, sweep_path, folder, index = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
sweep = load_sweep(sweep_path)
(folder / f"ready-{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
t0 = time.monotonic(); storage = open_storage(parse_storage(url)); print("open", round(time.monotonic() - t0, 2))
plan = join_plan(storage, "together", sweep)
study = budgeted_study(open_study(storage, "together", plan, worker_index=index), storage, plan.settings.n_trials)

def objective(trial):
    time.sleep(0.05)  # long enough for the others to come asking meanwhile
    return trial.suggest_float("optim.lr", 1e-3, 1e-2, log=True)

ran = 0
while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < plan.settings.n_trials:
    try:
        study.optimize(objective, n_trials=1)
        ran += 1
    except BudgetFull:
        time.sleep(0.2)
print(f"ran {ran}")
"""


@pytest.mark.timeout(600)
def test_processes_starting_together_on_an_empty_storage_all_join_and_fill_the_budget_exactly(
    storage_url: str, tmp_path: Path
) -> None:
    # What `docker compose up` or a Kubernetes indexed Job does on day one: they used to crash on
    # "duplicate key value violates unique constraint" (PostgreSQL) / "table studies already exists"
    # (SQLite) creating Optuna's tables, and to overshoot the budget by racing for its last trials.
    processes, budget = 4, 12
    sweep = write_sweep(tmp_path, {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2}})
    sweep.write_text(sweep.read_text() + f"run_cap: {budget}\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TOGETHER, storage_url, str(sweep), str(tmp_path), str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(processes)
    ]
    try:
        deadline = time.monotonic() + 300
        while len(list(tmp_path.glob("ready-*"))) < processes:
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs if p.poll() is not None]
            assert time.monotonic() < deadline, "the processes never got ready"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * processes, "\n".join(outputs)

    storage = reopen(storage_url)
    assert optuna.get_all_study_names(storage) == ["together"]
    study = load_study(storage, "together")
    trials = study.get_trials()
    assert Counter(t.state.name for t in trials) == {"COMPLETE": budget}  # no extra, no FAIL or WAITING leftovers
    assert sorted(t.number for t in trials) == list(range(budget))
    assert stored_settings(study).n_trials == budget  # type: ignore[union-attr]
    ran = [int(out.rsplit("ran ", 1)[1]) for out in outputs]
    assert sum(ran) == budget and sum(r > 0 for r in ran) >= 2, ran
