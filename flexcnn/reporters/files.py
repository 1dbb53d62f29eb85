"""The run folder: resolved config, per-epoch metrics, summary and plots.

Every file is written atomically, so a run killed at any moment leaves files
that parse. ``metrics.jsonl`` is rewritten whole each epoch (it is small).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flexcnn.checkpoint import atomic_write, atomic_write_json, atomic_write_text
from flexcnn.config import dump_config
from flexcnn.reporters.base import Reporter, RunInfo, RunResult


class FilesReporter(Reporter):
    """Writes config.yaml, metrics.jsonl, summary.json, per_class.json and confusion.png into the run folder.

    It keeps the run's record: metrics.jsonl is what a resumed run reads its history back from,
    so it hears of each epoch before the checkpoint (see ``Reporter``).
    """

    keeps_record = True

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.rows: list[dict[str, Any]] = []

    def on_start(self, info: RunInfo) -> None:
        self.run_dir = Path(info.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", dump_config(info.config))
        # On resume, the epochs the checkpoint had reached; a later one a kill left behind is dropped.
        self.rows = list(info.history)
        self._write_rows()

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch + 1, **metrics})
        self._write_rows()

    def _write_rows(self) -> None:
        assert self.run_dir is not None
        text = "".join(json.dumps(row) + "\n" for row in self.rows)
        atomic_write_text(self.run_dir / "metrics.jsonl", text)

    def on_end(self, result: RunResult) -> None:
        run_dir = Path(result.run_dir)
        atomic_write_json(run_dir / "summary.json", result.summary)
        if result.report is not None:
            atomic_write_json(run_dir / "per_class.json", result.report.per_class)
            # Drawn once per report and shared with the W&B reporter (ClassificationReport caches it).
            png = result.report.confusion_png(result.classes, title=f"{result.eval_split} confusion matrix")
            atomic_write(run_dir / "confusion.png", lambda fh: fh.write(png))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl``, oldest first; none when it does not exist."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
