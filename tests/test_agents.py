"""One agent per GPU: GPU selection, child environments, signal forwarding and restart limits.

The fan-out is exercised through the real CLI (`python -m flexcnn agent ...`)
with a small Python child that records what it saw; the end-to-end test runs
real `flexcnn optuna worker` children against a journal-file study.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flexcnn.agents import parse_gpu_spec, select_gpus
from flexcnn.agents.children import agent_specs, wandb_agent_argv
from flexcnn.agents.gpus import Discovery, NoGPUError, discover_gpus
from flexcnn.agents.redact import redact
from flexcnn.errors import UserError
from flexcnn.exit_codes import EXIT_STOPPED
from flexcnn.hardware import threads_per_worker
from flexcnn.processes import RestartPolicy
from flexcnn.search.worker_argv import optuna_worker_argv, storage_env
from flexcnn.secret_files import resolve_secret_files
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)

# A stand-in for an agent: records its slot, CUDA_VISIBLE_DEVICES and the signals it got.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path

    out = Path(os.environ["AGENT_TEST_DIR"])
    slot = os.environ["FLEXCNN_AGENT_SLOT"]
    mode = os.environ["AGENT_TEST_MODE"]
    with (out / f"starts{slot}.log").open("a") as f:
        f.write("start\\n")
    starts = len((out / f"starts{slot}.log").read_text().splitlines())
    rec = {"slot": slot, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "signals": [],
           "key_ok": os.environ.get("WANDB_API_KEY") == os.environ.get("AGENT_TEST_EXPECT_KEY")}

    def save(trial):
        rec["trial"] = trial
        (out / f"slot{slot}.json").write_text(json.dumps(rec))

    if mode == "crash" or (mode == "crash-once" and starts == 1):
        sys.exit(3)
    if mode in ("quick", "crash-once"):
        save("completed")
        sys.exit(0)
    stop = []

    def on_term(signum, frame):
        rec["signals"].append("SIGTERM")
        (out / f"term{slot}").touch()
        if mode == "trial":  # finish the current trial, then exit (what an Optuna worker does)
            stop.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    (out / f"ready{slot}").touch()
    try:
        while not stop:
            time.sleep(0.02)
        time.sleep(0.3)  # the rest of the trial
        save("completed")
        # 0: that trial finished the study; 75 (EXIT_STOPPED): trials are left, start me again
        sys.exit(int(os.environ.get("AGENT_TEST_STOP_CODE", "0")))
    except KeyboardInterrupt:  # SIGINT: checkpoint now and say so
        rec["signals"].append("SIGINT")
        save("interrupted")
        sys.exit(130)
    """
)


@pytest.fixture
def child(tmp_path: Path) -> Callable[..., tuple[list[str], dict[str, str]]]:
    """Returns (child argv, env) for a mode of the stand-in child; records land in tmp_path."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    def make(mode: str, **extra_env: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "AGENT_TEST_DIR": str(tmp_path), "AGENT_TEST_MODE": mode, **extra_env}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        return [sys.executable, str(script)], env

    return make


def agent_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flexcnn", "agent", *args]


def run_agent(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``flexcnn agent ARGS`` to completion, its output captured (every agent here ends within a minute)."""
    return subprocess.run(agent_cli(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("slot*.json"))}


def starts(folder: Path, slot: int) -> int:
    path = folder / f"starts{slot}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_agents(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        agent_cli(*args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# -- GPU selection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", None),
        ("ALL", None),
        ("0", ["0"]),
        ("0,1,3", ["0", "1", "3"]),
        (" 2, 5 ", ["2", "5"]),
        ("GPU-8f0e1c2d-aaaa-bbbb", ["GPU-8f0e1c2d-aaaa-bbbb"]),
    ],
)
def test_gpu_spec_parses(spec: str, expected: list[str] | None) -> None:
    assert parse_gpu_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "comma-separated"), ("0,,1", "comma-separated"), ("zero", "not a GPU index"), ("0,1,0", "listed twice")],
)
def test_bad_gpu_spec_names_the_problem(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_gpu_spec(spec)


@pytest.mark.parametrize(
    ("cvd", "ids"), [("", ()), ("-1", ()), ("0,1", ("0", "1")), ("1,-1,2", ("1",)), ("GPU-abc", ("GPU-abc",))]
)
def test_discovery_follows_cuda_visible_devices(cvd: str, ids: tuple[str, ...]) -> None:
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": cvd, "PATH": ""}).ids == ids


def test_selection_checks_the_visible_gpus() -> None:
    visible = Discovery(("0", "1", "2"), "test")
    assert select_gpus("all", cpu=False, discovery=visible) == ["0", "1", "2"]
    assert select_gpus("2,0", cpu=False, discovery=visible) == ["2", "0"]
    with pytest.raises(UserError, match=r"GPU 5 is not visible \(visible: 0, 1, 2"):
        select_gpus("0,5", cpu=False, discovery=visible)
    none = Discovery((), "CUDA_VISIBLE_DEVICES=''")
    with pytest.raises(NoGPUError, match=r"no GPU is visible.*--cpu"):
        select_gpus("all", cpu=False, discovery=none)
    assert select_gpus("0,1", cpu=True, discovery=none) == ["0", "1"]
    with pytest.raises(UserError, match="name the agent slots"):
        select_gpus("all", cpu=True, discovery=none)


# -- child commands and environments ----------------------------------------------------------------


def test_child_commands_follow_the_contracts() -> None:
    argv = optuna_worker_argv("sweeps/s.yaml", study="st", n_trials=7, threads=2)
    assert argv[1:] == [
        "-m", "flexcnn", "optuna", "worker", "sweeps/s.yaml", "--study", "st", "--n-trials", "7", "--threads", "2",
    ]  # fmt: skip
    assert optuna_worker_argv("s.yaml", study=None)[1:] == ["-m", "flexcnn", "optuna", "worker", "s.yaml"]
    # The storage URL goes in the environment only (argv is world-readable through ps).
    assert storage_env("postgresql://u:pw@db/o") == {"FLEXCNN_STORAGE": "postgresql://u:pw@db/o"}
    assert storage_env(None) == {}
    # --forward-signals: the agent's runs are in process groups of their own; only the agent can reach them.
    agent = ["-m", "wandb", "agent", "--forward-signals"]
    assert wandb_agent_argv("e/p/abc123", count=2)[1:] == [*agent, "--count", "2", "e/p/abc123"]
    assert wandb_agent_argv("abc123", count=None)[1:] == [*agent, "abc123"]


def test_workers_share_the_cpus_instead_of_each_taking_all() -> None:
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores
    assert threads_per_worker(2) == max(1, cores // 2)
    assert threads_per_worker(10 * cores) == 1


def test_wandb_agent_command_is_what_wandb_accepts() -> None:
    argv = wandb_agent_argv("abc123", count=2)
    out = subprocess.run([*argv[:-1], "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--count" in out.stdout and "--forward-signals" in out.stdout


def test_each_child_is_pinned_to_its_gpu(tmp_path: Path) -> None:
    specs = agent_specs(["x"], ["0", "3"], env={"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert [s.name for s in specs] == ["gpu0", "gpu3"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "3"]
    assert [s.env["FLEXCNN_AGENT_SLOT"] for s in specs] == ["0", "1"]
    assert all(s.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for s in specs)
    # the sweep's `flexcnn ...` command must resolve to this installation
    assert specs[0].env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_secret_files_become_variables(tmp_path: Path) -> None:
    key = tmp_path / "wandb_api_key"
    key.write_text("k" * 40 + "\n")
    env = resolve_secret_files({"WANDB_API_KEY_FILE": str(key), "PGPASSWORD_FILE": ""})
    assert env["WANDB_API_KEY"] == "k" * 40
    assert "PGPASSWORD" not in env
    with pytest.raises(UserError, match="both WANDB_API_KEY and WANDB_API_KEY_FILE"):
        resolve_secret_files({"WANDB_API_KEY": "x", "WANDB_API_KEY_FILE": str(key)})
    with pytest.raises(UserError, match=r"PGPASSWORD_FILE=.*cannot read"):
        resolve_secret_files({"PGPASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        resolve_secret_files({"PGPASSWORD_FILE": str(tmp_path / "empty")})


def test_passwords_are_redacted() -> None:
    assert redact("postgresql://flexcnn:s3cr%40t@db:5432/optuna") == "postgresql://flexcnn:***@db:5432/optuna"
    assert redact("postgresql+psycopg2://u:pw@db/optuna") == "postgresql+psycopg2://u:***@db/optuna"
    assert redact("postgresql://flexcnn@db/optuna") == "postgresql://flexcnn@db/optuna"
    assert redact("journal:runs/optuna.log") == "journal:runs/optuna.log"


def test_restart_delay_grows_and_is_capped() -> None:
    policy = RestartPolicy(max_restarts=5, delay=2.0, max_delay=5.0)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


# -- the fan-out, through the CLI -------------------------------------------------------------------


@pytest.mark.parametrize(("per_gpu", "names"), [(1, ["gpu0", "gpu1"]), (2, ["gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"])])
def test_cpu_mode_spawns_trials_per_gpu_children_on_each_requested_gpu(
    child, tmp_path: Path, per_gpu: int, names: list[str]
) -> None:
    argv, env = child("quick")
    out = run_agent("run", "--gpus", "0,1", "--cpu", "--trials-per-gpu", str(per_gpu), "--", *argv, env=env)
    assert out.returncode == 0, out.stderr
    recs = records(tmp_path)
    slots = [str(i) for i in range(2 * per_gpu)]
    assert {r["slot"]: r["cuda"] for r in recs.values()} == {s: str(int(s) // per_gpu) for s in slots}
    assert len({r["pid"] for r in recs.values()}) == 2 * per_gpu
    for name in names:
        assert f"{name}: started pid" in out.stderr
    assert "(CUDA_VISIBLE_DEVICES=1)" in out.stderr


def test_sigterm_lets_both_children_finish_their_trial(child, tmp_path: Path) -> None:
    argv, env = child("trial")
    proc = start_agents(["run", "--gpus", "0,1", "--cpu", "--", *argv], env)
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), 30, "both children", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    recs = records(tmp_path)
    assert {r["cuda"] for r in recs.values()} == {"0", "1"}
    assert all(r["signals"] == ["SIGTERM"] and r["trial"] == "completed" for r in recs.values()), recs
    assert "finish their current trial" in err
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 1  # a stopped child is not restarted


def test_agents_stopped_with_work_left_exit_75_so_a_scheduler_starts_them_again(child, tmp_path: Path) -> None:
    # An evicted pod: each worker records its trial and exits EXIT_STOPPED, as does the agent. Kubernetes'
    # podFailurePolicy (DisruptionTarget: Ignore) recreates the pod; on 0 it would count the index as done.
    argv, env = child("trial", AGENT_TEST_STOP_CODE=str(EXIT_STOPPED))
    proc = start_agents(["run", "--gpus", "0,1", "--cpu", "--", *argv], env)
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), 30, "both children", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_STOPPED == 75, err
    assert all(r["trial"] == "completed" for r in records(tmp_path).values())
    assert "gpu0: exited with code 75 after the stop request" in err and "ERROR" not in err
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 1


def test_second_signal_interrupts_the_trials(child, tmp_path: Path) -> None:
    argv, env = child("stubborn")  # ignores SIGTERM (a long trial), stops on SIGINT
    proc = start_agents(["run", "--gpus", "0,1", "--cpu", "--", *argv], env)
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), 30, "both children", proc)
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: (tmp_path / "term0").exists() and (tmp_path / "term1").exists(), 30, "SIGTERM forwarded", proc)
    time.sleep(0.3)
    assert proc.poll() is None  # still waiting for the trials
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_STOPPED, err  # interrupted trials: work is left, start the agents again
    recs = records(tmp_path)
    assert all(r["signals"] == ["SIGTERM", "SIGINT"] and r["trial"] == "interrupted" for r in recs.values()), recs
    assert "stopped before the agents' work was done: exit code 75" in err


def test_grace_period_interrupts_trials_that_do_not_end(child, tmp_path: Path) -> None:
    argv, env = child("stubborn")
    proc = start_agents(["run", "--gpus", "0", "--cpu", "--grace", "0.5", "--", *argv], env)
    wait_for(lambda: (tmp_path / "ready0").exists(), 30, "the child", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_STOPPED, err
    assert records(tmp_path)["slot0"]["trial"] == "interrupted"
    assert "still running 0.5 s after the stop request: interrupting" in err


def test_a_crashing_child_is_restarted_at_most_the_limit(child, tmp_path: Path) -> None:
    argv, env = child("crash")
    out = run_agent(
        "run", "--gpus", "0,1", "--cpu", "--max-restarts", "2", "--restart-delay", "0", "--", *argv, env=env
    )
    assert out.returncode == 1
    assert starts(tmp_path, 0) == starts(tmp_path, 1) == 3  # the first start + 2 restarts
    assert "gpu0 failed 3 time(s) (exit codes 3, 3, 3)" in out.stderr
    assert "--max-restarts 2" in out.stderr


def test_a_child_that_recovers_is_restarted_once(child, tmp_path: Path) -> None:
    argv, env = child("crash-once")
    out = run_agent("run", "--gpus", "0", "--cpu", "--restart-delay", "0", "--", *argv, env=env)
    assert out.returncode == 0, out.stderr
    assert starts(tmp_path, 0) == 2
    assert "restart 1 of 3" in out.stderr


def test_no_visible_gpu_is_a_clear_error(child) -> None:
    argv, env = child("quick")
    out = run_agent("run", "--", *argv, env={**env, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 2
    assert out.stderr.startswith("error: no GPU is visible")
    assert "--cpu" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_program_is_a_usage_error_not_a_crash_loop(child) -> None:
    _, env = child("quick")
    out = run_agent("run", "--gpus", "0", "--cpu", "--", "no-such-program-xyz", env=env)
    assert out.returncode == 2
    assert "no-such-program-xyz: command not found" in out.stderr and "restart" not in out.stderr


def test_the_api_key_reaches_children_and_never_the_logs(child, tmp_path: Path) -> None:
    key = "0123456789abcdef" * 2 + "deadbeef"
    (tmp_path / "key").write_text(key)
    argv, env = child("quick", WANDB_API_KEY_FILE=str(tmp_path / "key"), AGENT_TEST_EXPECT_KEY=key)
    env.pop("WANDB_API_KEY", None)
    out = run_agent("run", "--gpus", "0", "--cpu", "--", *argv, env=env)
    assert out.returncode == 0, out.stderr
    assert records(tmp_path)["slot0"]["key_ok"] is True
    assert key not in out.stdout + out.stderr


def test_dry_run_shows_the_commands_without_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = run_agent("wandb", "ent/proj/abc123", "--gpus", "0,1", "--cpu", "--count", "2", "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["gpu0", "gpu1"]
    assert "CUDA_VISIBLE_DEVICES=1 " in lines[1]
    assert lines[0].endswith("-m wandb agent --forward-signals --count 2 ent/proj/abc123")

    sweep = REPO / "configs" / "demo-digits.yaml"  # any existing file: a dry run does not read it
    out = run_agent(
        "optuna",
        str(sweep),
        "--study",
        "s",
        "--storage",
        "postgresql://u:hunter2@db/optuna",
        "--gpus",
        "0",
        "--cpu",
        "--dry-run",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    # The storage reaches the worker in its environment, where ps cannot read it, never in its argv.
    assert "optuna worker" in out.stdout and "FLEXCNN_STORAGE='postgresql://u:***@db/optuna' " in out.stdout
    assert "--storage" not in out.stdout
    assert out.stdout.rstrip().endswith(f"--threads {threads_per_worker(1)}")
    assert "hunter2" not in out.stdout + out.stderr


def test_optuna_run_hands_its_workers_the_storage_in_the_environment() -> None:
    from flexcnn.search.fanout import _worker_spec, children_env
    from flexcnn.search.workers import WorkerOptions

    opts = WorkerOptions(sweep_path=Path("s.yaml"), storage="postgresql://u:hunter2@db/optuna", threads=1)
    env = children_env(opts, base={"PATH": "/bin"})
    spec = _worker_spec(opts, 0, env, time.monotonic())
    assert env["FLEXCNN_STORAGE"] == opts.storage and env["OMP_NUM_THREADS"] == "1"
    assert "--storage" not in spec.argv and "hunter2" not in " ".join(spec.argv)


def test_optuna_agent_needs_an_existing_sweep(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXCNN_")}
    out = run_agent("optuna", "--cpu", "--gpus", "0", env=env, cwd=tmp_path)
    assert out.returncode == 2 and "FLEXCNN_SWEEP" in out.stderr
    out = run_agent("optuna", "missing.yaml", "--study", "s", "--cpu", "--gpus", "0", env=env, cwd=tmp_path)
    assert out.returncode == 2 and "missing.yaml does not exist" in out.stderr


# -- end to end: real Optuna workers ----------------------------------------------------------------


def _child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _is_optuna_worker(pid: int) -> bool:
    try:
        return b"optuna\0worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # exited between listing and reading
        return False


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads child environments from /proc")
def test_optuna_workers_on_two_slots_stop_cleanly_with_their_trials_recorded(tmp_path: Path) -> None:
    import optuna

    (tmp_path / "base.yaml").write_text(
        textwrap.dedent(
            f"""
            model: {{kind: flexible_cnn, num_filters: [8, 16], dense_units: [32]}}
            data: {{source: digits, hflip: false, batch_size: 64, limit: 400}}
            train: {{epochs: 6, seed: 0, monitor: val/acc}}
            logging: {{output_dir: {tmp_path / "runs"}, progress: false, wandb: {{mode: disabled}}}}
            """
        )
    )
    (tmp_path / "sweep.yaml").write_text(
        textwrap.dedent(
            """
            program: flexcnn
            command: [flexcnn, train, base.yaml, --args-json, "${args_json_file}"]
            method: random
            metric: {name: val/acc, goal: maximize}
            parameters:
              optim.lr: {values: [0.003, 0.001]}
            """
        )
    )
    storage = str(tmp_path / "study.journal")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.Popen(
        agent_cli(
            "optuna", "sweep.yaml", "--study", "e2e", "--storage", storage, "--n-trials", "50", "--gpus", "0,1", "--cpu"
        ),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Both workers are up: two children, pinned to GPU 0 and GPU 1, each running `optuna worker`.
        # A child shows up in /proc between fork and exec, still carrying the parent's environment and
        # command line, so wait until both have exec'd the worker before reading their environments.
        def two_workers_execed() -> bool:
            kids = _child_pids(proc.pid)
            return len(kids) == 2 and all(_is_optuna_worker(pid) for pid in kids)

        wait_for(two_workers_execed, 60, "two worker processes", proc)
        kids = _child_pids(proc.pid)
        assert sorted(_environ(pid)["CUDA_VISIBLE_DEVICES"] for pid in kids) == ["0", "1"]
        # The storage URL travels in the environment, which only the owner can read, never in argv.
        assert all(_environ(pid)["FLEXCNN_STORAGE"] == storage for pid in kids)
        assert all(b"--storage" not in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in kids)

        def running() -> int:
            if not Path(storage).exists():
                return 0
            try:
                study = optuna.load_study(
                    study_name="e2e",
                    storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)),
                )
            except KeyError:  # the journal exists, the study is not created yet
                return 0
            return sum(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))

        wait_for(lambda: running() == 2, 120, "a trial running in each worker", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_STOPPED, out  # 50 trials asked for: the study is not finished
    study = optuna.load_study(
        study_name="e2e", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    )
    trials = study.get_trials(deepcopy=False)
    assert len(trials) >= 2
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING], out
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    recorded = [t for t in trials if t.state in finished]
    # each worker recorded the trial it was running, with how it ended
    assert {t.user_attrs["worker"]["pid"] for t in recorded} == set(kids)
    assert all(t.user_attrs.get("status") for t in recorded), [t.user_attrs for t in recorded]
    assert "exited with code 75 after the stop request" in out and "asked to stop before the study was finished" in out
