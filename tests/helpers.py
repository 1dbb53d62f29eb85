"""Small helpers that several test modules share: image folders, FER CSVs, the CLI, offline W&B runs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO


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
