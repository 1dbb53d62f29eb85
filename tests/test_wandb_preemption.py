"""A W&B sweep run preempted under ``wandb agent --forward-signals``, requeued, and resumed.

There is no W&B server here, so the agent's server loop cannot run; everything
after it is wandb's own code: ``Agent._process_command`` builds the run's
command line and parameter files for a ``run`` (and, when W&B hands a
preempted run back, a ``resume``) command and starts it with ``AgentProcess``
(``forward_signals=True``, the run in a process group of its own). A small
driver process hosts that agent, as ``wandb agent`` would, and waits on its
first shutdown signal as ``Agent.run`` does. The test sends the driver SIGTERM
mid-run and reads both offline attempts back with ``wandb leet inspect``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wandb.sdk.lib import config_util

from flexcnn.checkpoint import Checkpoint
from flexcnn.reporters.files import read_metrics
from flexcnn.reporters.wandb.run_config import run_config, sweep_parameter_names
from flexcnn.run_folder import find_wandb_run_dir
from flexcnn.signals import interrupt_exit_code, interrupts_deferred, received_signal, sigterm_as_interrupt
from tests.conftest import REPO
from tests.helpers import OfflineRun, read_offline_run

SWEEP_ID = "preemptsweep"
RUN_ID = "preempt01"
EPOCHS = 12
COMMAND = ["flexcnn", "train", str(REPO / "configs" / "demo-digits.yaml"), "--args-json", "${args_json_file}"]

# wandb's agent, minus its server loop: one command, then wait as Agent.run waits after a shutdown signal.
DRIVER = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
os.environ["WANDB_SWEEP_ID"] = spec["sweep_id"]  # what run_agent sets before the loop starts
from wandb.wandb_agent import Agent, ShutdownSignal

agent = Agent(api=None, queue=None, sweep_id=spec["sweep_id"], forward_signals=True)
agent._sweep_command = spec["command"]
response = agent._process_command(
    {"type": spec["type"], "run_id": spec["run_id"], "args": spec["args"], "program": "flexcnn"}
)
assert "exception" not in response, response
proc = agent._run_processes[spec["run_id"]]
child = proc._popen.pid
out = {"child_pgid": os.getpgid(child), "agent_pgid": os.getpgrp(), "shutdown_signals": []}
with open(spec["started"], "w") as fh:
    json.dump(out, fh)
while True:
    try:
        out["exit"] = proc.wait()
        break
    except ShutdownSignal as exc:  # tier 1 of Agent.run: the signal went to the run; wait for it
        out["shutdown_signals"].append(exc.label)
with open(spec["result"], "w") as fh:
    json.dump(out, fh)
"""


def _args(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """What the sweep controller would hand out: dotted names, a nested block, constants."""
    return {
        "optim.lr": {"value": 0.003},
        "data.batch_size": {"value": 32},
        "model": {"value": {"activation": "gelu", "num_filters": [32, 64]}},
        "train.epochs": {"value": EPOCHS},
        "train.threads": {"value": 1},
        "logging.output_dir": {"value": str(tmp_path / "runs")},
        "logging.progress": {"value": False},
    }


def _env(tmp_path: Path, wandb_dir: Path | None) -> dict[str, str]:
    """A machine with no W&B login: `auto` logs offline, as on an air-gapped node."""
    drop = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_IDENTITY_TOKEN_FILE", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("WANDB_SWEEP")}
    if wandb_dir is not None:
        env["WANDB_DIR"] = str(wandb_dir)  # unset, the agent sets it to its working folder
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_agent(
    tmp_path: Path, kind: str, log: Path, wandb_dir: Path | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """The driver, in ``tmp_path`` as its working folder (where the agent writes its parameter files)."""
    spec = {
        "sweep_id": SWEEP_ID,
        "run_id": RUN_ID,
        "type": kind,
        "command": COMMAND,
        "args": _args(tmp_path),
        "started": str(tmp_path / f"{kind}-started.json"),
        "result": str(tmp_path / f"{kind}-result.json"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(spec)],
            cwd=tmp_path,
            env=_env(tmp_path, wandb_dir),
            stdout=out,
            stderr=out,
        )
    return proc, Path(spec["result"])


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not reached (agent exit {proc.poll()})\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen[bytes], result: Path, log: Path) -> dict[str, Any]:
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the agent did not end\n{log.read_text()[-4000:]}")
    assert proc.returncode == 0 and result.is_file(), log.read_text()[-4000:]
    return json.loads(result.read_text())


def _epochs(wb: OfflineRun) -> list[int]:
    return [int(row["epoch"]) for row in wb.history if "train/loss" in row]


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        if key.startswith("_wandb"):
            continue  # wandb's own bookkeeping (chart specs), not a hyperparameter
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _attempts(root: Path) -> list[OfflineRun]:
    """The offline W&B runs of RUN_ID under ``root``, oldest first (wandb names them offline-run-<time>-<id>)."""
    return [read_offline_run(p) for p in sorted((root / "wandb").glob(f"offline-run-*-{RUN_ID}"))]


def test_preempted_sweep_run_is_requeued_and_resumes_each_epoch_once(tmp_path: Path) -> None:
    # --- the agent's run is stopped mid-run by a SIGTERM to the agent
    log = tmp_path / "agent-run.log"
    agent, result = _start_agent(tmp_path, "run", log)
    runs = tmp_path / "runs"
    run_dir = runs / f"flexible_cnn-digits-{RUN_ID}"  # named after the W&B run id
    _wait(lambda: len(read_metrics(run_dir)) >= 2, 300, "two finished epochs", agent, log)
    agent.send_signal(signal.SIGTERM)
    first = _finish(agent, result, log)

    assert first["child_pgid"] != first["agent_pgid"]  # its own process group: only the agent can forward to it
    assert first["shutdown_signals"] == ["SIGTERM"]  # the agent got one SIGTERM and waited for the run
    assert first["exit"] == 128 + signal.SIGTERM  # flexcnn train got it: stopped by our handler, not killed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "test/acc" not in summary
    done = [row["epoch"] for row in read_metrics(run_dir)]
    last = Checkpoint.load(run_dir / "last.pt")
    assert 2 <= last.epoch < EPOCHS and done == list(range(1, last.epoch + 1))  # last.pt holds the finished epochs
    assert last.resume is not None
    [preempted] = _attempts(run_dir)
    assert [r["type"] for r in preempted.records].count("preempting") == 1  # mark_preempting(): W&B requeues it
    assert preempted.exit_code == 128 + signal.SIGTERM
    assert preempted.run["run_id"] == RUN_ID and preempted.run["sweep_id"] == SWEEP_ID
    assert _epochs(preempted) == done  # W&B has exactly the epochs last.pt has
    assert not list((tmp_path / "wandb").glob("offline-run-*"))  # in the run folder, not the agent's WANDB_DIR default

    # --- W&B hands the run back: same run id, same command line
    log = tmp_path / "agent-resume.log"
    agent, result = _start_agent(tmp_path, "resume", log)
    second = _finish(agent, result, log)
    assert second["exit"] == 0 and second["shutdown_signals"] == []
    assert f"W&B run {RUN_ID} was requeued: resuming {run_dir}" in log.read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert [row["epoch"] for row in read_metrics(run_dir)] == list(range(1, EPOCHS + 1))

    first_wb, resumed = _attempts(run_dir)
    assert resumed.run["run_id"] == RUN_ID and resumed.exit_code == 0
    assert "preempting" not in [r["type"] for r in resumed.records]
    assert _epochs(resumed) == list(range(last.epoch + 1, EPOCHS + 1))
    combined = _epochs(first_wb) + _epochs(resumed)
    assert combined == list(range(1, EPOCHS + 1))  # each epoch exactly once, in order

    # --- one key per swept hyperparameter (what the UI's parallel coordinates show)
    keys = _flat_keys(resumed.config)
    print("config keys of the sweep run:", sorted(keys))
    swept = ["optim.lr", "data.batch_size", "model.activation", "model.num_filters", "train.epochs", "train.threads"]
    swept += ["logging.output_dir", "logging.progress"]
    assert {name: keys.count(name) for name in swept} == dict.fromkeys(swept, 1)
    assert len(keys) == len(set(keys))  # nothing else twice either
    assert resumed.config["optim.lr"] == 0.003 and resumed.config["data.batch_size"] == 32  # the sweep's keys
    assert resumed.config["model"]["kind"] == "flexible_cnn"  # resolved defaults of a nested block stay
    assert resumed.config["model"]["activation"] == "gelu"
    assert resumed.config["optim"]["name"] == "adamw" and "lr" not in resumed.config["optim"]
    assert resumed.config["logging"]["wandb"]["mode"] == "offline"  # the mode used, not the config's default


def test_a_scheduler_signalling_every_process_preempts_once(tmp_path: Path) -> None:
    """SLURM signals every process of a job: the run gets SIGTERM from it and from the agent, and stops cleanly once."""
    log = tmp_path / "agent-run.log"
    (tmp_path / "chosen").mkdir()
    agent, result = _start_agent(tmp_path, "run", log, wandb_dir=tmp_path / "chosen")  # WANDB_DIR set by the user
    run_dir = tmp_path / "runs" / f"flexible_cnn-digits-{RUN_ID}"
    _wait(lambda: len(read_metrics(run_dir)) >= 1, 300, "one finished epoch", agent, log)
    started = json.loads((tmp_path / "run-started.json").read_text())
    os.killpg(started["child_pgid"], signal.SIGTERM)
    agent.send_signal(signal.SIGTERM)  # forwarded: the run's second SIGTERM
    first = _finish(agent, result, log)
    assert first["exit"] == 128 + signal.SIGTERM and first["shutdown_signals"] == ["SIGTERM"]
    [wb] = _attempts(tmp_path / "chosen")
    assert [r["type"] for r in wb.records].count("preempting") == 1 and wb.exit_code == 128 + signal.SIGTERM
    assert _epochs(wb) == [row["epoch"] for row in read_metrics(run_dir)]
    assert Checkpoint.load(run_dir / "last.pt").epoch == len(_epochs(wb))


# --------------------------------------------------------------------------- the parts, in-process


def test_a_signal_while_an_epoch_is_recorded_waits_until_it_is_written() -> None:
    steps: list[str] = []
    with sigterm_as_interrupt():
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                signal.raise_signal(signal.SIGTERM)
                steps.append("metrics.jsonl")
                signal.raise_signal(signal.SIGTERM)  # a second SIGTERM (SLURM + the agent): ignored
                steps.append("last.pt")
                steps.append("W&B row")
            steps.append("next epoch")  # never reached
        assert received_signal() == signal.SIGTERM and interrupt_exit_code() == 143
        # Ctrl-C while stopping still interrupts at once, deferred block or not.
        with pytest.raises(KeyboardInterrupt), interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("never")
    assert steps == ["metrics.jsonl", "last.pt", "W&B row"]


def test_dotted_sweep_parameters_leave_the_nested_sections(tmp_path: Path) -> None:
    params = tmp_path / "config-run.yaml"
    config_util.save_config_file_from_dict(
        str(params),
        {"optim.lr": {"value": 0.01}, "model": {"value": {"activation": "gelu"}}, "missing.leaf": {"value": 1}},
    )
    names = sweep_parameter_names({"WANDB_SWEEP_ID": "s", "WANDB_SWEEP_PARAM_PATH": str(params)})
    assert names == ["optim.lr", "model", "missing.leaf"]
    assert sweep_parameter_names({"WANDB_SWEEP_PARAM_PATH": str(params)}) == []  # not under an agent
    resolved = {
        "optim": {"lr": 0.01, "name": "adamw"},
        "model": {"activation": "gelu", "kind": "flexible_cnn"},
        "solo": {"only": 1},
        "logging": {"wandb": {"mode": "disabled", "project": "p"}},
    }
    out = run_config(resolved, mode="offline", swept=[*names, "solo.only"])
    assert out == {
        "optim": {"name": "adamw"},  # lr is the sweep's own `optim.lr` key
        "model": {"activation": "gelu", "kind": "flexible_cnn"},  # a nested block merges: kept whole
        "logging": {"wandb": {"mode": "offline", "project": "p"}},  # the mode used
    }
    assert resolved["optim"]["lr"] == 0.01  # the caller's config is not changed


def test_a_requeued_run_finds_its_folder_by_run_id(tmp_path: Path) -> None:
    for name, run_id in (("a", "other"), ("b", "mine"), ("c", "mine")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "wandb-run-id").write_text(run_id + "\n")
    (tmp_path / "b" / "last.pt").write_bytes(b"x")  # the one with a checkpoint wins over an empty start
    assert find_wandb_run_dir(tmp_path, "mine") == tmp_path / "b"
    assert find_wandb_run_dir(tmp_path, "nobody") is None
    assert find_wandb_run_dir(tmp_path / "absent", "mine") is None
