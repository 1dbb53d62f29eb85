"""A report's data from a folder of run folders (W&B agent runs, single ``flexcnn train`` runs, trials).

There is no study here, so one is made in memory: each run a trial (oldest first) whose value is the
best of its monitored metric, whose parameters are the config fields that differ between the runs,
and whose intermediate values are its epochs. Optuna's plots then work on it as on a real study.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.errors import UserError
from flexcnn.report.data import ReportData, best_record
from flexcnn.report.records import STATUS_STATE, TrialRecord, format_value, planned_epochs, read_run_folder

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

# Config fields that differ between runs without being a choice of the sweep.
_NOT_PARAMS = ("logging.", "train.threads", "train.monitor", "data.root")
_MAX_DEPTH = 4  # runs/<study>/trial-N is two levels down; leave room for a folder of such folders


def find_run_folders(root: Path) -> list[Path]:
    """Run folders under ``root`` (or ``root`` itself): folders holding config.yaml and metrics.jsonl."""
    found = []
    for folder, subfolders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if "config.yaml" in files and ("metrics.jsonl" in files or "summary.json" in files):
            found.append(Path(folder))
            subfolders.clear()  # a run folder's wandb/ holds no runs of ours
        elif depth >= _MAX_DEPTH:
            subfolders.clear()
        else:
            subfolders[:] = sorted(d for d in subfolders if d != "wandb" and not d.startswith("."))
    return found


def from_folder(root: Path) -> ReportData:
    """Gather every run folder under ``root`` into a report's data; UserError when there are none."""
    import optuna

    if not root.exists():
        raise UserError(f"{root} does not exist; give a run folder, a folder of run folders, or --storage/--study")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a run folder or a folder of run folders")
    folders = sorted(find_run_folders(root), key=lambda p: ((p / "config.yaml").stat().st_mtime, str(p)))
    if not folders:
        raise UserError(
            f"no run folders under {root} (a run folder holds config.yaml and metrics.jsonl, "
            "as flexcnn train and every trial write them)"
        )
    runs = [(path, *read_run_folder(path)) for path in folders]
    monitor = Counter(str((c.get("train") or {}).get("monitor") or "val/acc") for _, _, _, c in runs).most_common(1)
    metric = monitor[0][0]
    direction = "minimize" if "loss" in metric else "maximize"
    params = _varying_params([c for _, _, _, c in runs])
    records = []
    for number, (path, summary, history, config) in enumerate(runs):
        label = str(path.relative_to(root)) if path != root else path.name
        records.append(_record(number, label, path, summary, history, config, params, metric))
    study = _in_memory_study(records, params, metric, direction)
    data = ReportData(
        title=f"Runs under {root}",
        source=f"{len(records)} run folder(s) under {root}",
        study=study,
        records=records,
        objective_names=[metric],
        directions=[direction],
        monitor=metric,
        default_out=root,
    )
    data.best = best_record(data)
    if data.best is not None and data.best.run_dir is not None:
        data.reproduce = [f"flexcnn train {data.best.run_dir / 'config.yaml'}"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return data


def _record(
    number: int,
    label: str,
    path: Path,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    config: dict[str, Any],
    params: dict[str, list[Any]],
    metric: str,
) -> TrialRecord:
    status = summary.get("status")
    # No summary.json: the run is still going, or was killed (its last.pt can resume it).
    state = STATUS_STATE.get(str(status), "FAIL") if status else "RUNNING"
    value = summary.get(f"best/{metric}")
    if not isinstance(value, int | float):
        column = [row[metric] for row in history if isinstance(row.get(metric), int | float)]
        value = (min(column) if "loss" in metric else max(column)) if column else None
    good = state == "COMPLETE" and isinstance(value, int | float) and math.isfinite(value)
    return TrialRecord(
        number=number,
        label=label,
        state=state if good or state != "COMPLETE" else "FAIL",
        values=[float(value)] if good else None,  # type: ignore[arg-type]
        params={name: values[number] for name, values in params.items() if values[number] is not None},
        run_dir=path,
        metrics=summary,
        history=history,
        planned_epochs=planned_epochs(config),
        seconds=summary.get("seconds"),
        reason=summary.get("reason"),
        note=None if status else "no summary.json: still running, or killed (flexcnn train --resume continues it)",
    )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _varying_params(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Config fields (dotted) whose values differ between the runs: name -> one value per run."""
    flat = [_flatten(c) for c in configs]
    names = sorted({k for f in flat for k in f if not k.startswith(_NOT_PARAMS)})
    out = {}
    for name in names:
        values = [f.get(name) for f in flat]
        if len({repr(v) for v in values}) > 1:
            out[name] = values
    return out


def _distribution(values: list[Any]) -> BaseDistribution:
    """A distribution that holds ``values``: numeric range (log when it spans 2 decades), else categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        low, high = min(present), max(present)
        log = low > 0 and high / low >= 100
        if all(isinstance(v, int) for v in present):
            return IntDistribution(int(low), int(high), log=log and low >= 1)
        return FloatDistribution(float(low), float(high), log=log)
    return CategoricalDistribution(sorted({format_value(v) for v in present}))


def _in_memory_study(
    records: list[TrialRecord], params: dict[str, list[Any]], metric: str, direction: str
) -> optuna.Study:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: _distribution(values) for name, values in params.items()}
    study = optuna.create_study(direction=direction, study_name="run folders")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is experimental in some Optuna versions
        study.set_metric_names([metric])
    for r in records:
        shown = {
            name: format_value(value) if isinstance(distributions[name], CategoricalDistribution) else value
            for name, value in r.params.items()
        }
        steps = {int(row["epoch"]): float(row[metric]) for row in r.history if _finite(row.get(metric))}
        state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}.get(r.state, TrialState.FAIL)
        study.add_trial(
            create_trial(
                state=state,
                values=r.values if state == TrialState.COMPLETE else None,
                params=shown,
                distributions={name: distributions[name] for name in shown},
                intermediate_values=steps,
            )
        )
    return study


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
