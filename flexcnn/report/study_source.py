"""A report's data from an Optuna study: its trials, their run folders, settings and best trial."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.errors import UserError
from flexcnn.report.data import ReportData, best_record, read_text
from flexcnn.report.records import TrialRecord, attr_metrics, planned_epochs, read_run_folder

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def from_study(storage: str | None, study_name: str | None, runs_dir: Path | None = None) -> ReportData:
    """Load ``study_name`` from ``storage`` (the forms ``flexcnn optuna status`` accepts) and its run folders.

    A trial's run folder is its ``run_dir`` user attribute; a relative one is looked for from the
    working folder, from ``runs_dir``, and from the storage file's folder and the folders above it.
    """
    import optuna

    from flexcnn.search.storage import open_storage, parse_storage

    spec = parse_storage(storage)
    backend = open_storage(spec, create=False)
    if study_name is None:
        names = optuna.get_all_study_names(backend)
        if len(names) != 1:
            listed = ", ".join(sorted(names)) or "none"
            raise UserError(f"give --study NAME (studies in {spec.describe()}: {listed})")
        study_name = names[0]
    try:
        # Not flexcnn.search.study.load_study: that module imports the config schema, hence torch (2 s).
        study = optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        listed = ", ".join(sorted(optuna.get_all_study_names(backend))) or "none"
        raise UserError(f"no study named {study_name!r} in {spec.describe()} (studies there: {listed})") from None
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise UserError(f"study {study_name!r} in {spec.describe()} has no trials yet; nothing to report")

    bases = _search_bases(spec, runs_dir)
    settings = dict(study.user_attrs.get("flexcnn") or {})
    monitor = str(settings.get("metric") or _first_monitor(trials) or "val/acc")
    records = [_record(t, bases, runs_dir, monitor) for t in trials]
    names = _objective_names(study, settings)
    data = ReportData(
        title=f"Optuna study {study_name}",
        source=f"study {study_name!r} on {spec.describe()}",
        study=study,
        records=records,
        objective_names=names,
        directions=[d.name.lower() for d in study.directions],
        monitor=monitor,
        settings=settings,
        is_study=True,
    )
    sweep = settings.get("sweep_file")
    if isinstance(sweep, str):
        data.sweep_path, data.sweep_text = sweep, read_text(sweep, bases)
    data.pareto = [t.number for t in study.best_trials] if len(study.directions) > 1 else []
    data.best = best_record(data)
    data.reproduce = _reproduce(storage, study_name, data.best)
    data.default_out = _common_parent(records) or Path.cwd() / f"report-{study_name}"
    return data


def _search_bases(spec: Any, runs_dir: Path | None) -> list[Path]:
    """Folders a relative run folder or sweep file path may be relative to, most likely first."""
    bases = [Path.cwd()]
    if runs_dir is not None:
        bases.append(runs_dir)
    path = ""
    if spec.kind == "journal":
        path = spec.url
    elif spec.url.startswith("sqlite") and ":///" in spec.url:
        path = spec.url.split(":///", 1)[1]
    if path and path != ":memory:":
        # The demo keeps its storage in runs/ next to the trial folders, and run_dir is relative to the
        # folder the study ran from, one level up: look in the storage's folder and those above it.
        bases.extend(list(Path(path).resolve().parents)[:4])
    return list(dict.fromkeys(bases))


def _find_run_dir(stored: Any, bases: list[Path], runs_dir: Path | None) -> tuple[Path | None, str | None]:
    """The trial's run folder, or None and a note that says where it was looked for."""
    if not isinstance(stored, str) or not stored:
        return None, "no run folder recorded"
    path = Path(stored)
    candidates = [path] if path.is_absolute() else [base / path for base in bases]
    if runs_dir is not None:
        candidates.append(runs_dir / path.name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate, None
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    return None, f"run folder not found (looked in {tried}; --runs-dir tells where the trial folders are)"


def _record(trial: FrozenTrial, bases: list[Path], runs_dir: Path | None, monitor: str) -> TrialRecord:
    attrs = trial.user_attrs
    run_dir, note = _find_run_dir(attrs.get("run_dir"), bases, runs_dir)
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}  # type: ignore[assignment]
    if run_dir is not None:
        summary, history, folder_config = read_run_folder(run_dir)
        config = folder_config or config
    if not history and trial.intermediate_values:
        # Without the run folder, the epochs Optuna was told of are the learning curve.
        history = [{"epoch": step, monitor: v} for step, v in sorted(trial.intermediate_values.items())]
    params = attrs.get("params") if isinstance(attrs.get("params"), dict) else dict(trial.params)
    seconds = trial.duration.total_seconds() if trial.duration is not None else summary.get("seconds")
    return TrialRecord(
        number=trial.number,
        label=str(trial.number),
        state=trial.state.name,
        values=list(trial.values) if trial.values is not None else None,
        params=dict(params),  # type: ignore[arg-type]
        run_dir=run_dir,
        metrics={**attr_metrics(attrs), **summary},  # the run folder's summary wins
        history=history,
        planned_epochs=planned_epochs(config),
        seconds=seconds,
        reason=attrs.get("reason") or summary.get("reason"),
        note=note,
    )


def _first_monitor(trials: list[FrozenTrial]) -> str | None:
    for t in trials:
        config = t.user_attrs.get("config")
        if isinstance(config, dict) and isinstance(config.get("train"), dict):
            return config["train"].get("monitor")
    return None


def _objective_names(study: optuna.Study, settings: dict[str, Any]) -> list[str]:
    """``study.metric_names`` when set, else the sweep's metric for a single objective, else ``objective k``."""
    n = len(study.directions)
    names = study.metric_names
    if names and len(names) == n:
        return list(names)
    if n == 1 and settings.get("metric"):
        return [str(settings["metric"])]
    return ["value"] if n == 1 else [f"objective {k}" for k in range(n)]


def _reproduce(storage: str | None, study_name: str, best: TrialRecord | None) -> list[str]:
    """The commands that export the best trial's config and retrain it."""
    if best is None:
        return []
    from flexcnn.search.storage import parse_storage

    target = f"trial-{best.number}.yaml"
    where = f"--storage {shlex.quote(parse_storage(storage).display)} " if storage else ""
    return [
        f"flexcnn optuna best {where}--study {shlex.quote(study_name)} --trial {best.number} --export {target}",
        f"flexcnn train {target}",
    ]


def _common_parent(records: list[TrialRecord]) -> Path | None:
    """The folder that holds every found run folder (``OUTPUT_DIR/<study>`` for flexcnn's studies)."""
    parents = {r.run_dir.resolve().parent for r in records if r.run_dir is not None}
    return parents.pop() if len(parents) == 1 else None
