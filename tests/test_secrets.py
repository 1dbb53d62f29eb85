"""A W&B API key in the environment never reaches a file, a log or the console.

A training run and an offline Optuna sweep run as real processes with
``WANDB_API_KEY`` set to a known value and HOME, TMPDIR and every cache
pointed into the test's folder; then every byte they wrote, and everything
they printed, is searched for the key. ``tests/test_wandb_reporter.py``
checks the reporter in-process; this checks the whole commands, W&B's own
service process and log files included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

KEY = "deadbeef" + "c0ffee42" * 4  # 40 hex characters, the shape of a real key
SWEEP = """\
command: [flexcnn, train, configs/demo-digits.yaml, --args-json, "${args_json_file}"]
method: grid
metric: {name: val/acc, goal: maximize}
parameters:
  train.epochs: {value: 1}
  data.limit: {value: 300}
  model.num_filters: {value: [8, 16]}
  model.dense_units: {value: [32]}
  optim.lr: {values: [0.01, 0.02]}
"""


def _env(root: Path) -> dict[str, str]:
    home = root / "home"
    for sub in ("home", "tmp", "cache"):
        (root / sub).mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_API_KEY=KEY,
        WANDB_SILENT="true",
        HOME=str(home),
        TMPDIR=str(root / "tmp"),
        XDG_CACHE_HOME=str(root / "cache"),
        XDG_CONFIG_HOME=str(root / "cache"),
        FLEXCNN_CACHE=str(root / "cache" / "flexcnn"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _flexcnn(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexcnn", *args],
        cwd=REPO,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=400,
    )


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_api_key_never_written_or_printed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    train = _flexcnn(
        [
            "train",
            "--wandb-mode",
            "offline",
            "--output-dir",
            str(runs / "train"),
            *[a for o in [*TINY, "train.epochs=1", "data.limit=300"] for a in ("--set", o)],
        ],
        tmp_path,
    )
    assert train.returncode == 0, train.stderr
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(SWEEP)
    sweep = _flexcnn(
        [
            "optuna",
            "run",
            str(sweep_file),
            "--storage",
            str(tmp_path / "study.log"),
            "--wandb-mode",
            "offline",
            "--output-dir",
            str(runs / "sweep"),
            "--workers",
            "1",
        ],
        tmp_path,
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert "COMPLETE 2" in sweep.stdout

    # The runs really went through W&B (offline), so there was something to leak into.
    offline_runs = list(runs.rglob("offline-run-*"))
    assert len(offline_runs) == 3, offline_runs
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20

    for text in (train.stdout, train.stderr, sweep.stdout, sweep.stderr):
        assert KEY not in text
    assert _files_holding(tmp_path, KEY.encode()) == []
    # Not the tail of it either (a "masked" key that keeps its last characters still leaks them).
    assert _files_holding(tmp_path, KEY[-12:].encode()) == []


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path: Path) -> None:
    import torch

    from flexcnn.checkpoint import load_checkpoint
    from flexcnn.errors import CheckpointError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    torch.save({"format": 1, "model": {}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
