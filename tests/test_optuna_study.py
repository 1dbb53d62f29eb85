"""Optuna studies end to end on tiny digits models: grid, pruning, failures, parallel workers, kills, export.

Single-worker cases run the worker loop in this process; the parallel and
fault cases start real ``flexcnn optuna run`` / ``flexcnn optuna worker``
processes against a journal file and SQLite, and read the study back with
Optuna itself.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from flexcnn.cli import cli
from flexcnn.exit_codes import EXIT_STOPPED
from flexcnn.search.samplers import make_sampler
from flexcnn.search.space import build_space
from flexcnn.search.storage import open_storage, parse_storage
from flexcnn.search.workers import WorkerOptions, install_stop_handlers, run_worker
from tests.helpers import offline_run_dir, read_offline_run, write_sweep

_STORAGES: dict[str, Any] = {}


def load(storage: str, name: str) -> optuna.Study:
    """Load a study; one storage object per URL, so polling does not open a connection pool each time."""
    if storage not in _STORAGES:
        _STORAGES[storage] = open_storage(parse_storage(storage))
    return optuna.load_study(study_name=name, storage=_STORAGES[storage])


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def flexcnn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from flexcnn.cli import main; main(sys.argv[1:])", *args]


def assert_sound(study: optuna.Study, n: int, workers: int) -> None:
    """No trial lost (N finished, nothing left RUNNING), none duplicated (own number, own folder)."""
    trials = study.get_trials()
    done = finished(study)
    # Workers claim trials within the budget atomically (flexcnn.search.claims): exactly n, whatever the workers.
    assert len(done) == n, (workers, Counter(t.state.name for t in trials))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in trials}) == len(trials)
    dirs = [t.user_attrs["run_dir"] for t in done]
    assert len(set(dirs)) == len(dirs)
    for trial in done:
        history = [json.loads(line) for line in (Path(trial.user_attrs["run_dir"]) / "metrics.jsonl").open()]
        assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
        assert history[-1]["epoch"] == trial.user_attrs["epochs"]


def wait_for_running_trial(storage: str, name: str, procs: list[subprocess.Popen], deadline: float) -> Any:
    """Poll the study until some trial is RUNNING with at least one epoch reported (so last.pt exists)."""
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(
                    f"a worker exited ({p.returncode}) before it could be killed:\n{p.communicate()[0]}"
                )
        try:
            study = load(storage, name)
        except KeyError:
            time.sleep(0.5)
            continue
        for trial in study.get_trials():
            owner = trial.user_attrs.get("worker") or {}
            started = trial.state == TrialState.RUNNING and trial.intermediate_values and owner.get("pid")
            if started and (Path(trial.user_attrs["run_dir"]) / "last.pt").is_file():
                return trial
        time.sleep(0.2)
    raise AssertionError("no trial got to its second epoch in time")


# --------------------------------------------------------------------------- in-process worker


def test_grid_search_runs_exactly_the_grid(tmp_path: Path) -> None:
    grid = {"model.activation": ["relu", "gelu"], "model.num_filters": [[8], [8, 16]]}
    sweep = write_sweep(
        tmp_path, {name: {"values": values} for name, values in grid.items()}, method="grid", run_cap=50
    )
    storage = str(tmp_path / "grid.log")
    opts = WorkerOptions(sweep_path=sweep, study_name="grid", storage=storage, threads=1)
    report = run_worker(opts, say=lambda _: None)
    assert report.exit_code == 0 and report.ran == Counter({"COMPLETE": 4})
    study = load(storage, "grid")
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)
    seen = sorted(json.dumps(t.user_attrs["params"], sort_keys=True) for t in trials)
    expected = sorted(
        json.dumps(dict(zip(grid, combo, strict=True)), sort_keys=True) for combo in itertools.product(*grid.values())
    )
    assert seen == expected  # every grid point once, nothing else
    # A second worker on the finished grid starts nothing.
    again = run_worker(opts, say=lambda _: None)
    assert sum(again.ran.values()) == 0 and len(load(storage, "grid").get_trials()) == 4


def test_hyperband_prunes_trials(tmp_path: Path) -> None:
    sweep = write_sweep(
        tmp_path,
        {
            "optim.lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 3e-2},
            "train.epochs": {"value": 4},
        },
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
        run_cap=9,
    )
    storage = str(tmp_path / "hb.log")
    opts = WorkerOptions(sweep_path=sweep, study_name="hb", storage=storage, sampler="random", seed=0, threads=1)
    run_worker(opts, say=lambda _: None)
    study = load(storage, "hb")
    states = Counter(t.state for t in study.get_trials())
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 9
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned, "hyperband pruned nothing in 9 trials"
    for trial in pruned:
        assert trial.user_attrs["status"] == "pruned"
        assert trial.user_attrs["epochs"] < 4  # it stopped training early
        assert max(trial.intermediate_values) == trial.user_attrs["epochs"]
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == "pruned"


def test_failed_trials_are_recorded_and_the_worker_goes_on(tmp_path: Path) -> None:
    # std 1e-45 (a float32 denormal) turns the first batch into inf: the loss is NaN at once.
    sweep = write_sweep(
        tmp_path,
        {"data.std": {"values": [[0.3], [1.0e-45]]}, "data.mean": {"value": [0.0]}},
        method="grid",
    )
    storage = str(tmp_path / "nan.log")
    report = run_worker(
        WorkerOptions(sweep_path=sweep, study_name="nan", storage=storage, threads=1), say=lambda _: None
    )
    assert report.exit_code == 0 and report.ran == Counter({"COMPLETE": 1, "FAIL": 1})
    failed = [t for t in load(storage, "nan").get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "diverged" in failed[0].user_attrs["reason"]
    assert "nan" in failed[0].user_attrs["reason"].lower()


def test_worker_stops_after_consecutive_failures(tmp_path: Path) -> None:
    # A valid config whose data folder does not exist: every trial fails when it loads its data.
    missing = tmp_path / "no-such-folder"
    sweep = write_sweep(
        tmp_path,
        {
            "data.source": {"value": "imagefolder"},
            "data.root": {"value": str(missing)},
            "optim.lr": {"values": [1e-3, 3e-3]},
        },
        run_cap=10,
    )
    lines: list[str] = []
    report = run_worker(
        WorkerOptions(sweep_path=sweep, study_name="bad", storage=str(tmp_path / "bad.log"), max_failures=3, threads=1),
        say=lines.append,
    )
    assert report.exit_code == 1
    assert "3 consecutive failed trials" in report.reason and "no-such-folder" in report.reason
    assert report.ran == Counter({"FAIL": 3})
    assert sum("FAIL" in line and "no-such-folder" in line for line in lines) == 3


def test_a_stopped_worker_requeues_its_trial_which_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, {"optim.lr": {"values": [3e-3]}, "train.epochs": {"value": 3}}, run_cap=1)
    storage = str(tmp_path / "stop.log")
    stop = threading.Event()

    def say(line: str) -> None:  # SIGTERM as the trial starts: it stops after its first epoch
        if "start" in line:
            stop.set()

    opts = WorkerOptions(sweep_path=sweep, study_name="stop", storage=storage, threads=1)
    report = run_worker(opts, stop, say=say)
    # Stopped with the study unfinished: EXIT_STOPPED tells a scheduler to start the worker again.
    assert report.exit_code == EXIT_STOPPED and report.reason == "asked to stop before the study was finished"
    (first,) = load(storage, "stop").get_trials(states=(TrialState.FAIL,))
    assert first.user_attrs["status"] == "interrupted" and "after epoch 1" in first.user_attrs["reason"]
    (queued,) = load(storage, "stop").get_trials(states=(TrialState.WAITING,))
    assert queued.params == first.params

    lines: list[str] = []
    report = run_worker(opts, say=lines.append)  # another worker picks the queued copy up
    assert report.ran == Counter({"COMPLETE": 1})
    assert any("re-run of trial 0" in line for line in lines)
    (done,) = load(storage, "stop").get_trials(states=(TrialState.COMPLETE,))
    assert done.user_attrs["resumed_from"] == first.user_attrs["run_dir"] == done.user_attrs["run_dir"]
    history = [json.loads(line) for line in (Path(done.user_attrs["run_dir"]) / "metrics.jsonl").open()]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_signals_ask_the_worker_to_stop_then_interrupt() -> None:
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_stop_handlers(stop, say=lambda _: None)
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()  # first signal: finish the epoch, record, re-queue
        with pytest.raises(KeyboardInterrupt):  # second: now
            signal.raise_signal(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_offline_wandb_run_per_trial_grouped_by_study(tmp_path: Path) -> None:
    # Successive halving with eta 3: a second trial worse than the first at epoch 1 is pruned.
    # GridSampler gives trial k the k-th point of a fixed shuffle; put the good rate first.
    rates = [1e-2, 1e-7]
    order = make_sampler("grid", build_space({"optim.lr": {"values": rates}}))._all_grids  # type: ignore[attr-defined]
    if order[0] != (rates[0],):
        rates.reverse()
    sweep = write_sweep(
        tmp_path,
        {"optim.lr": {"values": rates}},
        method="grid",
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
    )
    storage = str(tmp_path / "wb.log")
    opts = WorkerOptions(
        sweep_path=sweep, study_name="wb", storage=storage, threads=1, wandb_mode="offline", pruner="successive_halving"
    )
    run_worker(opts, say=lambda _: None)
    trials = load(storage, "wb").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    for trial in trials:
        run = read_offline_run(offline_run_dir(Path(trial.user_attrs["run_dir"])))
        assert run.run["run_group"] == "wb" and run.run["display_name"] == f"wb-trial-{trial.number}"
        assert run.config["optuna"]["study"] == "wb" and run.config["optuna"]["trial"] == trial.number
        assert run.config["optuna"]["params"] == trial.user_attrs["params"]
        status = "completed" if trial.state == TrialState.COMPLETE else "pruned"
        assert run.summary["status"] == status and status in run.run["tags"] and "optuna" in run.run["tags"]
        assert [row["epoch"] for row in run.history if "val/acc" in row] == list(
            range(1, trial.user_attrs["epochs"] + 1)
        )


# --------------------------------------------------------------------------- processes


def test_two_workers_on_sqlite_then_export_reproduces_the_best_trial(tmp_path: Path) -> None:
    sweep = write_sweep(
        tmp_path,
        {
            "optim.lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 3e-2},
            "model.num_filters": {"values": [[8, 16], [16, 32]]},
        },
        method="bayes",
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    n = 6
    out = subprocess.run(
        flexcnn_cmd(
            "optuna", "run", str(sweep), "--study", "sq", "--storage", storage, "--n-trials", str(n), "--workers", "2"
        ),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "database is locked" not in out.stdout + out.stderr
    assert "rank" in out.stdout and "val/acc" in out.stdout  # the leaderboard
    study = load(storage, "sq")
    assert_sound(study, n, workers=2)
    owners = {t.user_attrs["worker"]["pid"] for t in study.get_trials()}
    assert len(owners) == 2  # both workers ran trials

    runner = CliRunner()
    best_yaml = tmp_path / "best.yaml"
    result = runner.invoke(cli, ["optuna", "best", "--storage", storage, "--study", "sq", "--export", str(best_yaml)])
    assert result.exit_code == 0, result.output
    best = max((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"wrote trial {best.number}'s config" in result.output
    exported = yaml.safe_load(best_yaml.read_text())
    assert exported["train"]["seed"] == 0 and exported["train"]["monitor"] == "val/acc"
    assert exported["model"]["num_filters"] == best.user_attrs["params"]["model.num_filters"]

    threads = torch.get_num_threads()
    try:
        result = runner.invoke(cli, ["train", str(best_yaml), "--output-dir", str(tmp_path / "again")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["best/val/acc"] == pytest.approx(best.value, abs=1e-9)


def test_two_workers_on_a_journal_file_survive_a_killed_worker(tmp_path: Path) -> None:
    sweep = write_sweep(
        tmp_path,
        {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2}, "train.epochs": {"value": 4}},
        method="random",
    )
    storage = str(tmp_path / "study.log")
    n = 5
    proc = subprocess.Popen(
        flexcnn_cmd(
            "optuna", "run", str(sweep), "--study", "jr", "--storage", storage, "--n-trials", str(n), "--workers", "2"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        victim = wait_for_running_trial(storage, "jr", [proc], time.monotonic() + 240)
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "killed by SIGKILL" in output and "re-queued" in output
    study = load(storage, "jr")
    assert_sound(study, n, workers=2)
    assert_killed_trial_resumed(study, victim)


def kill_a_worker_mid_trial_then_check_the_retry(tmp_path: Path, storage: str, study_name: str) -> None:
    """Two bare workers, one SIGKILLed mid-trial: only the heartbeat can notice; the study must still finish."""
    sweep = write_sweep(
        tmp_path,
        {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2}, "train.epochs": {"value": 4}},
        method="random",
    )
    n = 4
    common = ["--study", study_name, "--storage", storage, "--n-trials", str(n), "--heartbeat", "1", "--threads", "1"]
    procs = [
        subprocess.Popen(
            flexcnn_cmd("optuna", "worker", str(sweep), *common, "--worker-index", str(k)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    try:
        victim = wait_for_running_trial(storage, study_name, procs, time.monotonic() + 240)
        killed = next(p for p in procs if p.pid == victim.user_attrs["worker"]["pid"])
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        survivor = next(p for p in procs if p is not killed)
        output, _ = survivor.communicate(timeout=400)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert survivor.returncode == 0, output
    study = load(storage, study_name)
    assert_sound(study, n, workers=2)
    assert_killed_trial_resumed(study, victim)


def test_killed_worker_trial_is_retried_through_heartbeats(tmp_path: Path) -> None:
    kill_a_worker_mid_trial_then_check_the_retry(tmp_path, f"sqlite:///{tmp_path / 'hb.db'}", "hb")


def assert_killed_trial_resumed(study: optuna.Study, victim: optuna.trial.FrozenTrial) -> None:
    """The killed trial is FAIL; a copy with its parameters finished, continuing its folder from last.pt."""
    trials = {t.number: t for t in study.get_trials()}
    assert trials[victim.number].state == TrialState.FAIL
    copies = [t for t in trials.values() if t.user_attrs.get("resumed_from") == victim.user_attrs["run_dir"]]
    assert len(copies) == 1, [t.user_attrs for t in trials.values()]
    copy = copies[0]
    assert copy.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert copy.params == victim.params
    history = [json.loads(line) for line in (Path(victim.user_attrs["run_dir"]) / "metrics.jsonl").open()]
    assert [row["epoch"] for row in history] == list(range(1, copy.user_attrs["epochs"] + 1))


def test_reaching_the_target_stops_the_trials_running_in_every_worker(tmp_path: Path) -> None:
    """Worker A runs a 300-epoch trial; worker B's 2-epoch trial reaches the target: A's stops at its next epoch."""
    from flexcnn.search.study import open_study, plan_study
    from flexcnn.search.sweep_file import load_sweep

    sweep = write_sweep(
        tmp_path,
        {"train.epochs": {"values": [2, 300]}},
        metric={"name": "val/acc", "goal": "maximize", "target": 0.05},  # any trained digits model reaches it
    )
    storage = str(tmp_path / "target.log")
    plan = plan_study(load_sweep(sweep), n_trials=6)
    study = open_study(open_storage(parse_storage(storage)), "tg", plan)
    # Queued trials are taken first and in order: the long one is running before the short one starts.
    study.enqueue_trial({"train.epochs": 300})
    study.enqueue_trial({"train.epochs": 2})
    common = ["--study", "tg", "--storage", storage, "--threads", "1"]
    procs = [
        subprocess.Popen(
            flexcnn_cmd("optuna", "worker", str(sweep), *common, "--worker-index", str(k), "--label", f"w{k}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    both = "\n".join(outputs)
    assert [p.returncode for p in procs] == [0, 0], both
    assert both.count("reached the target val/acc 0.05") == 2, both  # each worker says why it stopped
    trials = load(storage, "tg").get_trials()
    assert len(trials) == 2, both  # no new trial after the target
    short, long = sorted(trials, key=lambda t: t.params["train.epochs"])
    assert short.state == TrialState.COMPLETE and short.value >= 0.05
    assert long.state == TrialState.PRUNED, both  # stopped, not failed, not run to its end
    assert long.user_attrs["stopped"] == "target reached" and long.user_attrs["status"] == "pruned"
    assert long.user_attrs["epochs"] < 100, long.user_attrs  # stopped at the epoch after the target, not at 300
    assert f"trial {short.number} reached the target" in long.user_attrs["reason"]
    assert "(stopped: target reached)" in both
    history = (Path(long.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert len(history) == long.user_attrs["epochs"]  # what it trained is kept
    status = CliRunner().invoke(cli, ["optuna", "status", "--storage", storage, "--study", "tg"])
    assert status.exit_code == 0 and "COMPLETE 1" in status.output and "PRUNED 1" in status.output, status.output


def test_worker_sampler_seeds_come_from_one_seed_sequence() -> None:
    """No two workers of a study, nor workers of nearby study seeds, share a sampler stream; reruns do."""
    import numpy as np

    from flexcnn.search.samplers import worker_seed

    seeds = {(s, k): worker_seed(s, k) for s in range(20) for k in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # seed 1 worker 1 is not seed 2 worker 0
    assert seeds[(1, 1)] != seeds[(2, 0)]
    assert worker_seed(1, 1) == seeds[(1, 1)]  # reproducible
    assert worker_seed(7, 3) == int(np.random.SeedSequence(7).spawn(4)[3].generate_state(1)[0])  # the k-th child

    space = build_space({"optim.lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}})

    def first_draws(seed: int, worker: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler("random", space, seed=seed, worker_index=worker))
        return [space.suggest(study.ask())["optim.lr"] for _ in range(3)]

    assert first_draws(1, 1) != first_draws(2, 0)  # the stream sharing the issue found
    assert first_draws(1, 0) != first_draws(1, 1)
    assert first_draws(1, 1) == first_draws(1, 1)


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path: Path) -> None:
    """The last epoch's value is reported for the others to be judged by, but the finished trial is kept."""
    from flexcnn.config import load_config
    from flexcnn.reporters.base import RunInfo, StopRun
    from flexcnn.reporters.optuna import OptunaPruningReporter

    class PruneEverything(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return True

    study = optuna.create_study(direction="maximize", pruner=PruneEverything())
    config = load_config(None, ["data.source=digits", "train.epochs=3"])
    info = RunInfo(config, tmp_path, ["0", "1"], {"trainable": 1}, "cpu", 1, 1, 1)
    reporter = OptunaPruningReporter(study.ask(), "val/acc")
    reporter.on_start(info)
    with pytest.raises(StopRun):
        reporter.on_epoch(1, {"val/acc": 0.5})  # epoch 2 of 3: pruned
    assert reporter.pruned_at == 2

    last = OptunaPruningReporter(study.ask(), "val/acc")
    last.on_start(info)
    last.on_epoch(2, {"val/acc": 0.6})  # epoch 3 of 3: reported, not pruned
    assert last.pruned_at is None and last.trial.study.trials[1].intermediate_values == {3: 0.6}
