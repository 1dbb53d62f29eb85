"""Small helpers that several test modules share: image folders, FER CSVs, the CLI, offline W&B runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

# A tiny study base config: 2-block CNN, 2 epochs on (part of) digits, no W&B.
STUDY_BASE: dict[str, Any] = {
    "model": {"kind": "flexible_cnn", "num_filters": [8, 16], "dense_units": [32]},
    "data": {"source": "digits", "augment": "none", "hflip": False, "batch_size": 64, "limit": 400},
    "optim": {"name": "adam", "lr": 0.003, "scheduler": "none"},
    "train": {"epochs": 2, "seed": 0},
    "logging": {"progress": False, "wandb": {"mode": "disabled", "num_samples": 0}},
}


def write_sweep(folder: Path, parameters: dict[str, Any], *, base: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A sweep file and its base config (``STUDY_BASE`` by default) in ``folder``; trial folders go to folder/runs."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = json.loads(json.dumps(base or STUDY_BASE))
    tree["logging"]["output_dir"] = str(folder / "runs")
    (folder / "base.yaml").write_text(yaml.safe_dump(tree))
    sweep = {
        "program": "flexcnn",
        "command": ["flexcnn", "train", "base.yaml", "--args-json", "${args_json_file}"],
        "method": "random",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": parameters,
        **extra,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def flexcnn_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "flexcnn", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class OfflineRun:
    """An offline W&B run as `wandb leet inspect --json` prints it, folded into what the UI shows."""

    path: Path
    records: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def table(self, prefix: str) -> dict[str, Any]:
        """The JSON of the first logged table file whose path starts with ``prefix``."""
        matches = [f for f in self.files if f.startswith(prefix) and f.endswith(".table.json")]
        assert matches, f"no table file {prefix}* in {self.files}"
        return json.loads((self.path / "files" / matches[0]).read_text())

    def artifact_file(self, logical_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The artifact holding ``logical_path`` and that file's JSON, read from where sync will read it."""
        for artifact in self.artifacts:
            for item in artifact["manifest"]["contents"]:
                if item["path"] == logical_path:
                    return artifact, json.loads(Path(item["local_path"]).read_text())
        raise AssertionError(f"no artifact holds {logical_path}")


def offline_run_dir(run_dir: Path) -> Path:
    runs = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline W&B run in {run_dir}/wandb, found {runs}"
    return runs[0]


def read_offline_run(path: Path) -> OfflineRun:
    """Run `wandb leet inspect --json PATH` and fold its records."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    out = OfflineRun(path=path, records=records)
    for rec in records:
        kind, body = rec["type"], rec.get(rec["type"], {})
        if kind == "history":
            out.history.append(body["item"])
        elif kind == "summary":
            out.summary.update(body.get("update", {}))
        elif kind == "run":
            out.run = body
            out.config.update(body.get("config", {}).get("update", {}))
        elif kind == "config":
            out.config.update(body.get("update", {}))
        elif kind == "metric":
            out.metrics.append(body)
        elif kind == "files":
            out.files += [f["path"] for f in body.get("files", [])]
        elif kind == "artifact":
            out.artifacts.append(body)
        elif kind == "exit":
            out.exit_code = body.get("exit_code", 0)
    return out


def uvx() -> list[str]:
    """uvx on PATH, next to this interpreter, in the Makefile's .tools/bin, or `uv tool run`.

    For tools that cannot share our environment (W&B's `sweeps` pins numpy<2, linters, validators).
    """
    import pytest

    for candidate in (
        shutil.which("uvx"),
        str(Path(sys.executable).parent / "uvx"),
        str(REPO / ".tools" / "bin" / "uvx"),
    ):
        if candidate and Path(candidate).is_file():
            return [candidate]
    for candidate in (shutil.which("uv"), str(REPO / ".tools" / "bin" / "uv")):
        if candidate and Path(candidate).is_file():
            return [candidate, "tool", "run"]
    pytest.fail("uvx not found on PATH, next to the interpreter or in .tools/bin: run `make setup` to install uv")
