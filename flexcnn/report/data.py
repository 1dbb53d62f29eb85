"""Everything a report page shows, gathered from a study or from a folder of run folders."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.report.records import TrialRecord

if TYPE_CHECKING:
    import optuna


@dataclass
class ReportData:
    """A study (a real one, or one made in memory from run folders) and its trials as records.

    ``records[i].number`` is trial number ``i`` of ``study``, so Optuna's plots and the leaderboard agree.
    """

    title: str
    source: str  # what it was made from, for the page's header
    study: optuna.Study
    records: list[TrialRecord]
    objective_names: list[str]
    directions: list[str]  # "maximize" / "minimize", one per objective
    monitor: str  # the per-epoch metric the learning curves show
    settings: dict[str, Any] = field(default_factory=dict)  # the study's stored flexcnn settings
    is_study: bool = False
    sweep_path: str | None = None
    sweep_text: str | None = None
    best: TrialRecord | None = None
    pareto: list[int] = field(default_factory=list)  # trial numbers on the Pareto front
    reproduce: list[str] = field(default_factory=list)  # commands that export and retrain the best trial
    default_out: Path = field(default_factory=Path.cwd)

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    def counts(self) -> dict[str, int]:
        """Trials by state, in a fixed order."""
        states = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
        return {s: sum(1 for r in self.records if r.state == s) for s in states}


def best_record(data: ReportData) -> TrialRecord | None:
    """The best COMPLETE trial; for several objectives, the Pareto member best at the first one."""
    candidates = [
        r
        for r in data.records
        if r.state == "COMPLETE" and r.values and all(math.isfinite(v) for v in r.values)
        if not data.multi or r.number in data.pareto
    ]
    if not candidates:
        return None
    sign = 1.0 if data.directions[0] == "maximize" else -1.0
    # Ties go to the earlier trial, as `flexcnn optuna best` picks.
    return max(candidates, key=lambda r: (sign * r.values[0], -r.number))  # type: ignore[index]


def read_text(path: str, bases: list[Path]) -> str | None:
    """The text of ``path`` (absolute, or relative to one of ``bases``), or None when none holds it."""
    candidates = [Path(path)] if Path(path).is_absolute() else [base / path for base in bases]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return candidate.read_text()
            except (OSError, UnicodeDecodeError):
                return None
    return None
