"""The W&B reporter against the real wandb, offline: what a dashboard would show, read back with `wandb leet`.

No W&B server exists here, so every run logs offline and ``wandb leet inspect
--json`` prints the records that ``wandb sync`` would upload. Nothing is mocked.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flexcnn.config import load_config
from flexcnn.errors import ConfigError
from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun
from flexcnn.reporters.wandb import ModeDecision, logged_in, resolve_mode, server_reachable, wandb_reporter_for
from flexcnn.reporters.wandb import reporter as wandb_reporter
from flexcnn.run import run
from tests.conftest import TINY
from tests.helpers import flexcnn_cli, offline_run_dir, read_offline_run

# A fake key in W&B's format: it must never appear in any file or output.
SENTINEL_KEY = "sentinel" + "0123456789abcdef" * 2


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No W&B credentials and no server: the machine of a user on an air-gapped cluster."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)


# --------------------------------------------------------------------------- mode


def _config(*overrides: str):
    return load_config(None, list(overrides))


def _netrc(tmp_path: Path, host: str) -> str:
    path = tmp_path / "netrc"
    path.write_text(f"machine {host}\n  login user\n  password {SENTINEL_KEY}\n")
    path.chmod(0o600)
    return str(path)


NOWHERE = {"NETRC": "/nonexistent/netrc"}


@pytest.mark.parametrize(
    ("overrides", "mode", "env", "reachable", "expected"),
    [
        # W&B stays off unless asked: WANDB_MODE alone only refines an `auto` request.
        ((), None, NOWHERE, True, "disabled"),
        ((), None, {**NOWHERE, "WANDB_MODE": "offline"}, True, "disabled"),
        # wandb agent sets WANDB_SWEEP_ID: its runs log, offline when not logged in.
        ((), None, {**NOWHERE, "WANDB_SWEEP_ID": "abc"}, True, "offline"),
        (("logging.wandb.mode=auto",), None, NOWHERE, True, "offline"),
        (("logging.wandb.mode=auto",), None, {**NOWHERE, "WANDB_API_KEY": SENTINEL_KEY}, True, "online"),
        (("logging.wandb.mode=auto",), None, {**NOWHERE, "WANDB_API_KEY": SENTINEL_KEY}, False, "offline"),
        (("logging.wandb.mode=auto",), None, {**NOWHERE, "WANDB_MODE": "dryrun"}, True, "offline"),
        (("logging.wandb.mode=auto",), None, {**NOWHERE, "WANDB_MODE": "disabled"}, True, "disabled"),
        (("logging.wandb.mode=auto",), None, {**NOWHERE, "WANDB_DISABLED": "true"}, True, "disabled"),
        # An explicit choice wins over the environment; the mode argument wins over the config.
        (("logging.wandb.mode=offline",), None, {**NOWHERE, "WANDB_MODE": "online"}, True, "offline"),
        (("logging.wandb.mode=offline",), "disabled", NOWHERE, True, "disabled"),
        ((), "offline", NOWHERE, True, "offline"),
        ((), "auto", {**NOWHERE, "WANDB_SWEEP_ID": "abc", "WANDB_API_KEY": SENTINEL_KEY}, True, "online"),
    ],
)
def test_resolve_mode(
    overrides: tuple[str, ...], mode: str | None, env: dict[str, str], reachable: bool, expected: str
) -> None:
    decision = resolve_mode(_config(*overrides), mode, env, reachable=lambda _env: reachable)
    assert decision.mode == expected
    assert SENTINEL_KEY not in decision.reason


def test_blank_wandb_mode_is_unset_and_a_run_still_logs(
    tmp_path: Path, no_login: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `export WANDB_MODE=` leaves it blank; wandb itself rejects a blank mode with a traceback.
    monkeypatch.setenv("WANDB_MODE", "")
    assert resolve_mode(_config("logging.wandb.mode=auto"), None, {"WANDB_MODE": " "}).mode == "offline"
    config = load_config(None, [*TINY, "train.epochs=1", "logging.wandb.mode=offline"])
    reporter = wandb_reporter_for(config)
    assert reporter is not None
    assert run(config, [reporter], run_dir=tmp_path / "run").status == "completed"
    assert "WANDB_MODE" in os.environ and os.environ["WANDB_MODE"] == ""  # given back as it was
    monkeypatch.delenv("WANDB_MODE")  # the `wandb` command that reads the run back would choke on it too
    assert isinstance(read_offline_run(offline_run_dir(tmp_path / "run")).summary["test/acc"], float)


def test_unknown_wandb_mode_is_a_user_error_before_training(tmp_path: Path, no_login: None) -> None:
    env = {**os.environ, "WANDB_MODE": "sometimes"}
    for mode in ("offline", "auto"):
        proc = flexcnn_cli("train", "--wandb-mode", mode, "--output-dir", str(tmp_path / mode),
                           *(a for o in TINY for a in ("--set", o)), env=env)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "WANDB_MODE='sometimes'" in proc.stderr and "offline" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / mode).exists()


def test_the_wandb_service_starts_while_the_run_loads_its_data(tmp_path: Path, no_login: None) -> None:
    # In a fresh process (this one may have a service already): building the reporter starts
    # W&B's service process in the background, before run() has loaded anything.
    script = """
import time
from flexcnn.config import load_config
from flexcnn.reporters.wandb import wandb_reporter_for
from wandb.sdk import wandb_setup
assert wandb_reporter_for(load_config(None, []), mode="offline") is not None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        wandb_setup.singleton().assert_service()
        print("service up")
        break
    except AssertionError:
        time.sleep(0.05)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.stdout.strip() == "service up", proc.stdout + proc.stderr


def test_netrc_login_is_detected_for_the_configured_host_only(tmp_path: Path) -> None:
    assert logged_in({"NETRC": _netrc(tmp_path, "api.wandb.ai")})
    assert not logged_in({"NETRC": _netrc(tmp_path, "wandb.example.com")})
    assert logged_in({"NETRC": _netrc(tmp_path, "wandb.example.com"), "WANDB_BASE_URL": "https://wandb.example.com"})
    assert not logged_in({"NETRC": str(tmp_path / "missing")})


def test_online_without_login_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="wandb login"):
        resolve_mode(_config("logging.wandb.mode=online"), None, NOWHERE)
    with pytest.raises(ConfigError, match="not one of"):
        resolve_mode(_config(), "sometimes", NOWHERE)


def test_disabled_under_an_agent_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flexcnn.reporters.wandb"):
        decision = resolve_mode(_config("logging.wandb.mode=disabled"), None, {**NOWHERE, "WANDB_SWEEP_ID": "abc"})
    assert decision == ModeDecision("disabled", "logging.wandb.mode")
    assert "sweep will see no metrics" in caplog.text


def test_unreachable_server_is_detected_quickly() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert server_reachable({"WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
    # The port is closed now: connection refused, at once.
    assert not server_reachable({"WANDB_BASE_URL": f"http://127.0.0.1:{port}"}, timeout=1.0)
    # Behind a proxy a direct connect proves nothing.
    assert server_reachable({"WANDB_BASE_URL": f"http://127.0.0.1:{port}", "HTTPS_PROXY": "http://proxy:3128"})


def test_auto_with_credentials_but_no_server_goes_offline(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        env = {"NETRC": _netrc(tmp_path, f"127.0.0.1:{port}"), "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
        decision = resolve_mode(_config("logging.wandb.mode=auto"), None, env)
    assert decision.mode == "offline"
    assert "unreachable" in decision.reason


def test_factory_returns_none_when_disabled_and_merges_names_and_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("WANDB_TAGS", "from-env")
    assert wandb_reporter_for(_config()) is None
    assert wandb_reporter_for(_config("logging.wandb.mode=offline"), mode="disabled") is None
    rep = wandb_reporter_for(
        _config("logging.wandb.mode=offline", "logging.wandb.tags=[a]", "logging.wandb.group=g0"),
        group="g1",
        name="trial-3",
        tags=["b", "a"],
        extra_config={"optuna": {"trial": 3}},
    )
    assert rep is not None
    assert (rep.settings.mode, rep.settings.group, rep.settings.name) == ("offline", "g1", "trial-3")
    assert rep.settings.tags == ["a", "b", "from-env"]
    assert rep.settings.extra_config == {"optuna": {"trial": 3}}


# --------------------------------------------------------------------------- full runs


class _PruneAt(Reporter):
    """Stops the run after ``epoch`` the way the Optuna reporter does."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch + 1 >= self.epoch:
            raise StopRun("pruned", "pruned by test")


def test_offline_run_logs_what_the_dashboard_needs(
    tmp_path: Path,
    no_login: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL_KEY)  # present, but the run is offline: never read nor written
    monkeypatch.setattr(wandb_reporter, "_offline_notice_shown", False)
    config = load_config(
        None, [*TINY, "train.epochs=3", "logging.wandb.num_samples=12", f"logging.output_dir={tmp_path}"]
    )
    reporter = wandb_reporter_for(
        config,
        mode="offline",
        group="study-a",
        name="trial-0",
        tags=["smoke"],
        extra_config={"optuna": {"study": "study-a", "trial": 0, "params": {"optim.lr": 0.001}}},
    )
    assert reporter is not None
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        result = run(config, [reporter], run_dir=run_dir)
    assert result.status == "completed"

    wb = read_offline_run(offline_run_dir(run_dir))
    # Per epoch: losses, accuracies, lr, timing, against the epoch as x-axis.
    epochs = [row for row in wb.history if "train/loss" in row]
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_seconds", "images_per_second"):
        assert all(isinstance(row[key], int | float) for row in epochs), key
    defined = {m.get("name") or m.get("glob_name"): m for m in wb.metrics}
    assert defined["*"]["step_metric"] == "epoch"
    assert defined["val/acc"]["summary"] == {"max": True}
    assert defined["val/loss"]["summary"] == {"min": True}
    # Summary: best val/acc (max) and val/loss (min), test metrics, parameter counts, status.
    assert wb.summary["val/acc"] == {"max": max(r["val/acc"] for r in epochs)}
    assert wb.summary["val/loss"] == {"min": min(r["val/loss"] for r in epochs)}
    assert wb.summary["test/acc"] == pytest.approx(result.summary["test/acc"])
    assert wb.summary["best/val/acc"] == pytest.approx(result.best_value)
    assert wb.summary["params/trainable"] == result.summary["params/trainable"] > 0
    assert wb.summary["status"] == "completed"
    # Config: nested (the UI groups it), plus what the caller merged in.
    assert wb.config["model"]["num_filters"] == [8, 16]
    assert wb.config["optuna"] == {"study": "study-a", "trial": 0, "params": {"optim.lr": 0.001}}
    assert (wb.run["run_group"], wb.run["display_name"], wb.run["job_type"]) == ("study-a", "trial-0", "train")
    assert set(wb.run["tags"]) == {"smoke", "completed"}
    assert wb.exit_code == 0

    # End of run: confusion matrix chart (its table) and image, per-class, ROC, PR, samples.
    confusion = wb.table("media/table/test/confusion_matrix_table")
    assert confusion["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert sum(row[2] for row in confusion["data"]) == len(result.targets)
    assert any(f.startswith("media/images/test/confusion_matrix_image") for f in wb.files)
    per_class = wb.table("media/table/test/per_class")
    assert per_class["columns"][:4] == ["class", "precision", "recall", "f1"]
    assert [row[0] for row in per_class["data"]] == result.classes
    roc, pr = wb.table("media/table/test/roc_table"), wb.table("media/table/test/pr_table")
    assert roc["columns"] == ["class", "fpr", "tpr"] and len(roc["data"]) > len(result.classes)
    assert pr["columns"] == ["class", "recall", "precision"] and len(pr["data"]) > len(result.classes)
    # The samples table with its images, as `wandb sync` uploads it (a run-table artifact).
    artifact, samples = wb.artifact_file("test/samples.table.json")
    assert samples["columns"] == ["image", "true", "predicted", "confidence", "correct"]
    assert len(samples["data"]) == 12
    correct = [row[4] for row in samples["data"]]
    assert correct == sorted(correct)  # wrong predictions first
    images = {row[0]["path"] for row in samples["data"]}
    assert all(row[0]["_type"] == "image-file" for row in samples["data"])
    assert images <= {item["path"] for item in artifact["manifest"]["contents"]}
    # The best checkpoint as a model artifact, referenced in place.
    models = [a for a in wb.artifacts if a["type"] == "model"]
    assert len(models) == 1 and "best" in models[0]["aliases"]
    (entry,) = models[0]["manifest"]["contents"]
    assert entry["path"] == "best.pt" and Path(entry["local_path"]) == run_dir / "best.pt"
    # Self-contained: every staged file `wandb sync` will need sits in the run folder.
    for artifact in wb.artifacts:
        for item in artifact["manifest"]["contents"]:
            assert Path(item["local_path"]).is_relative_to(run_dir), item["local_path"]

    # The one-time notice names the sync command; the key appears nowhere.
    out, err = capfd.readouterr()
    assert f"wandb sync {offline_run_dir(run_dir)}" in caplog.text
    assert SENTINEL_KEY not in out + err + caplog.text
    assert files_containing(run_dir, SENTINEL_KEY) == []


def test_pruned_and_failed_runs_are_recorded(tmp_path: Path, no_login: None, caplog: pytest.LogCaptureFixture) -> None:
    wandb_reporter._offline_notice_shown = True  # a later run in the same process: no second notice
    config = load_config(
        None, [*TINY, "train.epochs=3", "logging.wandb.mode=offline", f"logging.output_dir={tmp_path}"]
    )
    reporter = wandb_reporter_for(config)
    assert reporter is not None
    with caplog.at_level(logging.WARNING, logger="flexcnn.reporters.wandb"):
        # W&B before the pruner: run() stops calling reporters at the first StopRun.
        result = run(config, [reporter, _PruneAt(1)], run_dir=tmp_path / "pruned")
    assert "wandb sync" not in caplog.text
    assert result.status == "pruned"
    wb = read_offline_run(offline_run_dir(tmp_path / "pruned"))
    assert wb.summary["status"] == "pruned"
    assert "pruned" in wb.run["tags"]
    assert wb.exit_code == 0
    assert [row["epoch"] for row in wb.history if "val/acc" in row] == [1]

    # A failed run (diverged loss) finishes its W&B run with exit code 1.
    failed = wandb_reporter_for(config)
    assert failed is not None
    info = RunInfo(
        config=config,
        run_dir=tmp_path / "failed",
        classes=["a", "b"],
        parameter_counts={"params/total": 10, "params/trainable": 10},
        device="cpu",
        train_size=4,
        val_size=2,
        test_size=2,
    )
    failed.on_start(info)
    failed.on_epoch(0, {"train/loss": float("nan"), "val/loss": float("nan"), "val/acc": 0.5})
    failed.on_end(
        RunResult(
            status="failed",
            run_dir=info.run_dir,
            summary={"status": "failed", "reason": "validation loss became nan in epoch 1"},
            history=[],
            classes=info.classes,
            monitor="val/acc",
        )
    )
    wb = read_offline_run(offline_run_dir(tmp_path / "failed"))
    assert wb.exit_code == 1
    assert wb.summary["status"] == "failed" and "failed" in wb.run["tags"]
    assert wb.summary["reason"].startswith("validation loss became nan")


def test_auto_falls_back_to_offline_when_the_server_fails(
    tmp_path: Path, no_login: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Credentials exist and the host answers, but it is no W&B server: the run still trains and logs offline.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def refuse() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )

        threading.Thread(target=refuse, daemon=True).start()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("WANDB_API_KEY", SENTINEL_KEY)
        monkeypatch.setenv("WANDB_INIT_TIMEOUT", "8")
        config = load_config(
            None, [*TINY, "train.epochs=1", "logging.wandb.mode=auto", f"logging.output_dir={tmp_path}"]
        )
        reporter = wandb_reporter_for(config)
        assert reporter is not None and reporter.settings.mode == "online"
        result = run(config, [reporter], run_dir=tmp_path / "run")
    assert result.status == "completed"
    assert reporter.settings.mode == "offline"
    wb = read_offline_run(offline_run_dir(tmp_path / "run"))
    assert isinstance(wb.summary["test/acc"], float)
    out, err = capfd.readouterr()
    assert SENTINEL_KEY not in out + err
    assert files_containing(tmp_path, SENTINEL_KEY) == []
