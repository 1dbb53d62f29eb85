"""The run folder: resolved config, per-epoch metrics, summary and plots.

Every file is written atomically, so a run killed at any moment leaves files
that parse. ``metrics.jsonl`` is rewritten whole each epoch (it is small).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.checkpoint import atomic_write, atomic_write_json, atomic_write_text
from flexcnn.config import dump_config
from flexcnn.metrics import curve_thresholds, per_class_auroc, roc_points
from flexcnn.reporters.base import Reporter, RunInfo, RunResult

if TYPE_CHECKING:
    import torch

# Points of all classes' ROC curves together in roc.json (about 100 thresholds a class for 10 classes).
ROC_POINTS = 1010


class FilesReporter(Reporter):
    """Writes config.yaml, metrics.jsonl, summary.json, per_class.json, confusion.png and roc.json.

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
        if result.report is not None and result.probs is not None and result.targets is not None:
            # The probabilities are gone once the run ends; their ROC curves are what a report draws later.
            atomic_write_json(run_dir / "roc.json", roc_curves(result.probs, result.targets, result.classes))


def roc_curves(probs: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """One-vs-rest ROC curve and AUROC of each class: ``{"classes", "auroc": {class: auc}, "curves": {class:
    {"fpr": [...], "tpr": [...]}}}``, at about 100 binned thresholds per class (fixed size whatever the split's).
    """
    auroc = per_class_auroc(probs, targets, len(classes))
    curves: dict[str, dict[str, list[float]]] = {name: {"fpr": [], "tpr": []} for name in classes}
    for name, fpr, tpr in roc_points(probs, targets, classes, curve_thresholds(len(classes), ROC_POINTS)):
        curves[name]["fpr"].append(fpr)
        curves[name]["tpr"].append(tpr)
    return {
        "classes": list(classes),
        # A class absent from the split has no ROC (torchmetrics gives NaN); JSON has no NaN.
        "auroc": {name: (round(a, 6) if math.isfinite(a) else None) for name, a in zip(classes, auroc, strict=True)},
        "curves": curves,
    }


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl``, oldest first; none when it does not exist."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
