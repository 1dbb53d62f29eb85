"""Faults under an Optuna study: the database restarts, a trial runs out of memory.

A killed worker (SIGKILL) whose trial is re-queued and resumed from its own
``last.pt`` is covered in ``tests/test_optuna_study.py`` (journal file and
SQLite heartbeats) and ``tests/test_optuna_postgres.py`` (PostgreSQL); this
file adds what they do not: PostgreSQL stopped and started while a study runs,
and an out-of-memory error inside a worker's trial.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
import yaml

from flexcnn.search.storage import with_driver
from tests.conftest import REPO
from tests.postgres import PostgresCluster, _as_server_user, find_bindir, postgres  # noqa: F401

BASE = {
    "train.epochs": {"value": 3},
    "data.limit": {"value": 400},
    "model.num_filters": {"value": [8, 16]},
    "model.dense_units": {"value": [32]},
    "data.hflip": {"value": False},
}


def write_sweep(folder: Path, parameters: dict[str, object], method: str = "grid") -> Path:
    sweep = {
        "command": ["flexcnn", "train", "configs/demo-digits.yaml"],
        "method": method,
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {**BASE, **parameters},
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def trials(storage: optuna.storages.BaseStorage | str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


# --------------------------------------------------------------------------- PostgreSQL restarts mid-study


def _pg_ctl(cluster: PostgresCluster, action: str) -> None:
    pg_ctl = str(find_bindir() / "pg_ctl")
    socket_dir = cluster.data_dir.parent
    options = f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {socket_dir} -c fsync=off -c max_connections=50"
    cmd = [pg_ctl, "-D", str(cluster.data_dir), "-w", "-t", "60"]
    cmd += (
        ["-m", "fast", "stop"] if action == "stop" else ["-o", options, "-l", str(socket_dir / "server.log"), "start"]
    )
    out = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"pg_ctl {action}: {out.stdout}{out.stderr}"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_postgresql_restart_during_a_study_loses_nothing(tmp_path: Path, postgres: PostgresCluster) -> None:  # noqa: F811
    # Long enough trials (full digits, 8 epochs) that the database goes away in the middle of one.
    sweep = write_sweep(
        tmp_path,
        {"optim.lr": {"values": [0.01, 0.02, 0.03]}, "train.epochs": {"value": 8}, "data.limit": {"value": 2000}},
    )
    study_name = "pg-restart"
    url = with_driver(postgres.url)  # SQLAlchemy's default PostgreSQL driver is not the one installed
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flexcnn",
            "optuna",
            "run",
            str(sweep),
            "--study",
            study_name,
            "--storage",
            postgres.url,
            "--workers",
            "1",
            "--heartbeat",
            "5",
            "--output-dir",
            str(tmp_path / "runs"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # One storage (one connection pool) for all the polling: a storage per poll opens a pool each time,
    # and on a slow machine those outnumbered the server's max_connections ("too many clients").
    poll: optuna.storages.RDBStorage | None = None
    try:
        deadline = time.monotonic() + 300
        while True:  # wait until a trial is training and has reported an epoch
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the study never got going"
            try:
                poll = poll or optuna.storages.RDBStorage(url)
                running = [t for t in trials(poll, study_name) if t.state.name == "RUNNING"]
            except (KeyError, sqlalchemy.exc.IntegrityError):  # the study (or its tables) is being created
                running = []
            if any(t.intermediate_values for t in running):
                break
            time.sleep(0.2)
        assert poll is not None
        poll.engine.dispose()  # hold no connection across the restart
        _pg_ctl(postgres, "stop")
        time.sleep(8)  # long enough for the worker to hit the dead database (heartbeat every 5 s)
        _pg_ctl(postgres, "start")
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = trials(url, study_name)
    states = [t.state.name for t in done]
    assert "RUNNING" not in states, f"a trial was left RUNNING: {states}\n{output}"
    if proc.returncode == 0:
        # Carried on: every grid point finished, each exactly once.
        complete = [t for t in done if t.state.name == "COMPLETE"]
        assert sorted(t.params["optim.lr"] for t in complete) == [0.01, 0.02, 0.03], output
    else:
        # Or stopped with a clear message naming the storage, and the study is still readable.
        assert "Traceback" not in output
        assert "storage" in output.lower() or "database" in output.lower(), output
    assert "Traceback" not in output, output
    for trial in done:  # every finished trial's folder has its summary: no result was lost
        if trial.state.name == "COMPLETE":
            assert (Path(trial.user_attrs["run_dir"]) / "summary.json").is_file()


# --------------------------------------------------------------------------- out of memory in a trial


@pytest.mark.timeout(600)
def test_out_of_memory_trial_fails_with_a_hint_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flexcnn.models.flexible_cnn import FlexibleCNN
    from flexcnn.search.workers import WorkerOptions, run_worker

    real_forward = FlexibleCNN.forward

    def forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 32:  # what a too-large batch does on a GPU
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return real_forward(self, x)

    monkeypatch.setattr(FlexibleCNN, "forward", forward)
    monkeypatch.chdir(REPO)
    sweep = write_sweep(tmp_path, {"data.batch_size": {"values": [16, 128]}, "data.eval_batch_size": {"value": 16}})
    storage = str(tmp_path / "study.log")
    said: list[str] = []
    report = run_worker(
        WorkerOptions(
            sweep_path=sweep,
            study_name="oom",
            storage=storage,
            n_trials=1,
            threads=1,
            output_dir=tmp_path / "runs",
            wandb_mode="disabled",
        ),
        say=said.append,
    )
    assert report.exit_code == 0, said
    done = trials(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)), "oom")
    by_batch = {t.params["data.batch_size"]: t for t in done}
    oom = by_batch[128]
    assert oom.state.name == "FAIL"
    assert "out of memory" in oom.user_attrs["reason"] and "lower data.batch_size" in oom.user_attrs["reason"]
    assert by_batch[16].state.name == "COMPLETE"  # the worker went on to the next trial
    assert any("FAIL" in line and "lower data.batch_size" in line for line in said), said
