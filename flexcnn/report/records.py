"""What the report knows about one trial or run: its outcome, metrics, parameters and run folder.

Metrics come from the run folder's ``summary.json`` first (old and new studies, W&B agent runs and
single ``flexcnn train`` runs all write it) and from the trial's user attributes second (a study
whose run folders are elsewhere still shows its numbers).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Leaderboard metric columns, in this order, each shown when any trial has it.
METRIC_COLUMNS = (
    "best/val/acc",
    "best/val/loss",
    "last/val/f1_macro",
    "test/acc",
    "test/f1_macro",
    "test/loss",
    "test/auroc_macro",
    "val/f1_macro",  # the final evaluation's, when the source has no test split
    "params/trainable",
    "latency_ms",
)
# Run statuses (summary.json) as Optuna trial states.
STATUS_STATE = {
    "completed": "COMPLETE",
    "early_stopped": "COMPLETE",
    "pruned": "PRUNED",
    "failed": "FAIL",
    "interrupted": "FAIL",
}
# User attributes that are bookkeeping, not metrics.
_NOT_METRICS = frozenset({"trial", "epochs", "best_epoch"})


@dataclass
class TrialRecord:
    """One trial of a study, or one run folder, as the report shows it."""

    number: int
    label: str  # "3" for a study's trial, the folder's path for a run folder
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: list[float] | None
    params: dict[str, Any]
    run_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    planned_epochs: int | None = None
    seconds: float | None = None
    reason: str | None = None
    note: str | None = None  # e.g. where its run folder was looked for

    @property
    def epochs(self) -> int:
        """Epochs it trained (a pruned trial's are fewer than planned)."""
        if self.history:
            return int(self.history[-1].get("epoch", len(self.history)))
        return int(self.metrics.get("epochs_completed") or 0)

    @property
    def best_epoch(self) -> int | None:
        value = self.metrics.get("best_epoch")
        return int(value) if isinstance(value, int | float) else None

    def read_json(self, name: str) -> Any:
        """``run_dir/name`` parsed, or None when there is no such file (or it does not parse)."""
        if self.run_dir is None or not (self.run_dir / name).is_file():
            return None
        try:
            return json.loads((self.run_dir / name).read_text())
        except (OSError, ValueError):
            return None

    def file(self, name: str) -> Path | None:
        """``run_dir/name`` when it exists."""
        if self.run_dir is None or not (self.run_dir / name).is_file():
            return None
        return self.run_dir / name


def read_run_folder(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(summary, metrics history, resolved config) of a run folder; empty parts where files are missing."""
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            summary = {}
    history: list[dict[str, Any]] = []
    if (run_dir / "metrics.jsonl").is_file():
        try:
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            history = [row for row in rows if isinstance(row, dict)]
        except ValueError:  # a torn line can only come from a foreign writer; ours are written atomically
            history = []
    return summary, history, read_config(run_dir)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` as a plain tree (empty when missing or unreadable)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return tree if isinstance(tree, dict) else {}


def attr_metrics(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """The numbers a trial's user attributes hold: flat ones (``test/acc``) and the ``summary`` dict."""
    out = {
        k: v
        for k, v in user_attrs.items()
        if k not in _NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
    }
    summary = user_attrs.get("summary")
    if isinstance(summary, dict):
        out.update({k: v for k, v in summary.items() if isinstance(v, int | float)})
    if isinstance(user_attrs.get("epochs"), int):
        out.setdefault("epochs_completed", user_attrs["epochs"])
    if isinstance(user_attrs.get("best_epoch"), int):
        out.setdefault("best_epoch", user_attrs["best_epoch"])
    return out


def metric_columns(records: list[TrialRecord]) -> list[str]:
    """The metric columns at least one record has a number for."""
    return [k for k in METRIC_COLUMNS if any(_is_number(r.metrics.get(k)) for r in records)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def planned_epochs(config: dict[str, Any]) -> int | None:
    """``train.epochs`` of a resolved config tree."""
    epochs = (config.get("train") or {}).get("epochs") if isinstance(config, dict) else None
    return int(epochs) if isinstance(epochs, int) else None


def format_value(value: Any) -> str:
    """A parameter value as the terminal leaderboard shows it (``flexcnn.search.space.format_value``, whose
    module imports the config schema and with it torch: seconds a report need not spend)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)
