"""The run folder: resolved config, per-epoch metrics, summary and plots.

Every file is written atomically, so a run killed at any moment leaves files
that parse. ``metrics.jsonl`` is rewritten whole each epoch (it is small).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flexcnn.checkpoint import atomic_write_json, atomic_write_text
from flexcnn.config import dump_config
from flexcnn.reporters.base import BaseReporter, RunInfo, RunResult


class FilesReporter(BaseReporter):
    """Writes config.yaml, metrics.jsonl, summary.json, per_class.json and confusion.png."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.history: list[dict[str, Any]] = []

    def on_start(self, info: RunInfo) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", dump_config(info.config))
        # On resume, keep only the epochs the checkpoint had reached.
        self.history = [row for row in read_metrics(self.run_dir) if row["epoch"] <= info.start_epoch]
        self._write_history()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.history.append({"epoch": epoch + 1, **metrics})
        self._write_history()

    def _write_history(self) -> None:
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write_text(self.run_dir / "metrics.jsonl", text)

    def on_end(self, result: RunResult) -> None:
        atomic_write_json(self.run_dir / "summary.json", result.summary)
        if result.report is not None:
            atomic_write_json(self.run_dir / "per_class.json", result.report.per_class)
            from flexcnn.metrics import save_confusion_png

            save_confusion_png(
                result.report.confusion,
                result.classes,
                str(self.run_dir / "confusion.png"),
                title=f"{result.eval_split} confusion matrix",
            )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
