"""Plan a study from a sweep file, create or join it in a storage, and summarise it.

A study stores its settings as the user attribute ``flexcnn``: metric,
direction, sampler, pruner, trial budget, the sweep and a fingerprint of its
search space. A worker that joins later (another machine, a container) gets
the same sampler, pruner and budget from there, and is refused when its sweep
file describes a different search space.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flexcnn.config import RunConfig, error_field, load_config, validate_config
from flexcnn.errors import ConfigError, UserError
from flexcnn.overrides import apply_overrides
from flexcnn.search.pruners import make_pruner, pruner_name
from flexcnn.search.samplers import make_sampler, sampler_name
from flexcnn.search.space import SearchSpace, build_space, format_value
from flexcnn.search.storage import storage_lock
from flexcnn.search.sweep_file import SweepSpec

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

log = logging.getLogger(__name__)
ATTR = "flexcnn"
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class StudySettings:
    """What every worker of a study must agree on; stored in the study."""

    metric: str
    direction: str
    sampler: str
    pruner: str
    n_trials: int
    fingerprint: str
    target: float | None = None
    sweep_file: str | None = None

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any) -> StudySettings | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})
        except TypeError:
            return None


@dataclass
class StudyPlan:
    """A sweep file resolved into everything a worker needs."""

    sweep: SweepSpec
    space: SearchSpace
    base_tree: dict[str, Any]  # base config + command --set + sweep constants, as a plain dict
    settings: StudySettings
    max_epochs: int

    def sampler(self, *, seed: int | None = None, worker_index: int = 0) -> optuna.samplers.BaseSampler:
        return make_sampler(
            self.settings.sampler, self.space, seed=seed, worker_index=worker_index, n_trials=self.settings.n_trials
        )

    def pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.settings.pruner, self.sweep.early_terminate, max_epochs=self.max_epochs)


def plan_study(
    sweep: SweepSpec,
    *,
    n_trials: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
) -> StudyPlan:
    """Translate ``sweep``; fail now (ConfigError) on anything a trial would fail on later."""
    space = build_space(sweep.parameters)
    base = load_config(sweep.base_config, sweep.fixed_overrides)
    tree = base.to_dict()
    for key in ("project", "entity"):
        if sweep.raw.get(key) and not tree["logging"]["wandb"].get(key):
            tree["logging"]["wandb"][key] = sweep.raw[key]
    tree = apply_overrides(tree, space.constants)
    monitor = space.constants.get("train.monitor", sweep.metric)
    if monitor != sweep.metric or "train.monitor" in space.names:
        raise ConfigError(
            f"sweep {sweep.path or ''}: train.monitor follows metric.name ({sweep.metric}); do not sweep or fix it"
        )
    tree["train"]["monitor"] = sweep.metric
    # Constants and parameters can depend on each other (data.mean with a swept data.std),
    # so check one whole trial: the first value of every parameter.
    validate_config(
        apply_overrides(tree, {p.name: p.first() for p in space.params}),
        source=f"{sweep.path or 'sweep'}: base config + constants + the first value of each parameter",
    )

    _check_every_value(tree, space, str(sweep.path or "sweep"))

    chosen_sampler = sampler_name(sweep.method, sampler)
    budget = _budget(sweep, space, chosen_sampler, n_trials)
    largest = space.largest("train.epochs")
    max_epochs = int(largest) if isinstance(largest, int | float) else int(tree["train"]["epochs"])
    settings = StudySettings(
        metric=sweep.metric,
        direction=sweep.direction,
        sampler=chosen_sampler,
        pruner=pruner_name(sweep.early_terminate, pruner),
        n_trials=budget,
        fingerprint=space.fingerprint,
        target=sweep.target,
        sweep_file=str(sweep.path) if sweep.path else None,
    )
    plan = StudyPlan(sweep, space, tree, settings, max_epochs)
    plan.pruner()  # hyperband bounds are checked here, before any worker starts
    return plan


def _check_every_value(tree: dict[str, Any], space: SearchSpace, where: str) -> None:
    """Each choice or bound of each parameter, the others at their first value: one its own field rejects
    fails the sweep now instead of failing every trial that draws it.

    Errors raised elsewhere (a cross-field check, such as one kernel size per block) are left to the
    trials: they depend on the combination, and some combinations may be valid.
    """
    firsts = {p.name: p.first() for p in space.params}
    for param in space.params:
        for value in param.edge_values():
            try:
                RunConfig.model_validate(apply_overrides(tree, {**firsts, param.name: value}))
            except ValidationError as exc:
                own = [e for e in exc.errors(include_url=False) if _is_within(error_field(e), param.name)]
                if own:
                    message = own[0]["msg"].removeprefix("Value error, ")
                    raise ConfigError(
                        f"{where}: parameter {param.name} can take {format_value(value)}, "
                        f"which {error_field(own[0])} does not accept: {message}"
                    ) from None


def _is_within(field: str, name: str) -> bool:
    return field == name or field.startswith(name + ".")


def _budget(sweep: SweepSpec, space: SearchSpace, sampler: str, n_trials: int | None) -> int:
    if n_trials is not None and n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {n_trials}")
    if sampler == "grid":
        size = space.grid_size()
        caps = [c for c in (n_trials, sweep.run_cap) if c is not None]
        return min([size, *caps])
    budget = n_trials if n_trials is not None else sweep.run_cap
    if budget is None:
        raise ConfigError(
            f"sweep {sweep.path or ''}: how many trials? give --n-trials N or run_cap in the sweep file "
            f"(method {sweep.method} has no natural end)"
        )
    return budget


def join_plan(
    storage: BaseStorage,
    name: str,
    sweep: SweepSpec,
    *,
    n_trials: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
) -> StudyPlan:
    """Plan for ``sweep``, taking sampler, pruner and budget from the stored study where not given."""
    stored = peek_settings(storage, name)
    if stored is not None:
        sampler = sampler or stored.sampler
        pruner = pruner or stored.pruner
        n_trials = n_trials or stored.n_trials
    return plan_study(sweep, n_trials=n_trials, sampler=sampler, pruner=pruner)


def peek_settings(storage: BaseStorage, name: str) -> StudySettings | None:
    """The stored settings of study ``name``, or None when there is no such study (yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return StudySettings.from_attr(storage.get_study_user_attrs(study_id).get(ATTR))


def open_study(
    storage: BaseStorage,
    name: str,
    plan: StudyPlan,
    *,
    seed: int | None = None,
    worker_index: int = 0,
    update_budget: bool = False,
) -> optuna.Study:
    """Create the study or join it; refuse a study whose stored search space or metric differ.

    ``update_budget`` stores this plan's trial budget in an existing study (a
    ``run`` with a larger ``--n-trials`` extends the study). Workers that start
    together take turns (:func:`~flexcnn.search.storage.storage_lock`): the first
    creates the study with its settings, the others find both.
    """
    import optuna

    with storage_lock(storage, f"study:{name}"):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=plan.settings.direction,
            sampler=plan.sampler(seed=seed, worker_index=worker_index),
            pruner=plan.pruner(),
            load_if_exists=True,
        )
        stored = StudySettings.from_attr(study.user_attrs.get(ATTR))
        if stored is None:
            study.set_user_attr(ATTR, plan.settings.to_attr())
            return study
    check_compatible(name, stored, plan.settings, study.direction.name.lower())
    if update_budget and stored.n_trials != plan.settings.n_trials:
        study.set_user_attr(ATTR, {**stored.to_attr(), "n_trials": plan.settings.n_trials})
    return study


def check_compatible(name: str, stored: StudySettings, mine: StudySettings, direction: str) -> None:
    """Refuse to mix trials from different search spaces or metrics in one study."""
    problems = []
    if stored.fingerprint != mine.fingerprint:
        problems.append("its search space (parameters) differs from this sweep file's")
    if stored.metric != mine.metric:
        problems.append(f"it optimises {stored.metric}, this sweep {mine.metric}")
    if direction != mine.direction:
        problems.append(f"it is set to {direction}, this sweep to {mine.direction}")
    if problems:
        raise ConfigError(
            f"study {name!r} exists and {'; '.join(problems)}; use a new --study name "
            "or the sweep file the study was created from"
        )


def stored_settings(study: optuna.Study) -> StudySettings | None:
    """The settings a study was created with, or None for a study not made by flexcnn."""
    return StudySettings.from_attr(study.user_attrs.get(ATTR))


def load_study(storage: BaseStorage, name: str) -> optuna.Study:
    """Load an existing study by name; UserError listing the studies there when it is missing."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        listed = ", ".join(names) if names else "none"
        raise UserError(f"no study named {name!r} in this storage (studies there: {listed})") from None


# --------------------------------------------------------------------------- summaries


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, in a fixed order (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in STATES}


@dataclass
class LeaderRow:
    rank: int
    number: int
    value: float
    epochs: int | None
    best_epoch: int | None
    seconds: float | None
    params: dict[str, Any]
    test_acc: float | None


def leaderboard(study: optuna.Study, top: int = 10) -> list[LeaderRow]:
    """The ``top`` COMPLETE trials, best first."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    trials = [t for t in trials if math.isfinite(t.value)]  # type: ignore[arg-type]
    reverse = study.direction.name == "MAXIMIZE"
    trials.sort(key=lambda t: (t.value, -t.number) if reverse else (-t.value, -t.number), reverse=True)  # type: ignore[operator]
    rows = []
    for rank, t in enumerate(trials[:top], start=1):
        duration = t.duration.total_seconds() if t.duration is not None else None
        summary = t.user_attrs.get("summary") or {}
        rows.append(
            LeaderRow(
                rank=rank,
                number=t.number,
                value=float(t.value),  # type: ignore[arg-type]
                epochs=t.user_attrs.get("epochs"),
                best_epoch=t.user_attrs.get("best_epoch"),
                seconds=duration,
                params=t.user_attrs.get("params") or dict(t.params),
                test_acc=summary.get("test/acc"),
            )
        )
    return rows


def format_leaderboard(rows: list[LeaderRow], metric: str) -> str:
    """A plain-text table; parameter names are shortened to their last part when that is unambiguous."""
    if not rows:
        return "no completed trials yet"
    names = list(dict.fromkeys(k for r in rows for k in r.params))
    short = {n: n.rsplit(".", 1)[-1] for n in names}
    if len(set(short.values())) != len(short):
        short = {n: n for n in names}
    header = ["rank", "trial", metric, "test/acc", "epochs", "secs", *short.values()]
    lines = [header]
    for r in rows:
        lines.append(
            [
                str(r.rank),
                str(r.number),
                f"{r.value:.4f}",
                f"{r.test_acc:.4f}" if r.test_acc is not None else "-",
                f"{r.best_epoch}/{r.epochs}" if r.epochs else "-",
                f"{r.seconds:.1f}" if r.seconds is not None else "-",
                *(format_value(r.params[n]) if n in r.params else "-" for n in names),
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_counts(counts: dict[str, int], n_trials: int | None = None) -> str:
    """``COMPLETE 7  PRUNED 5  FAIL 0  RUNNING 0  WAITING 0  (12/12 finished)``."""
    finished = counts["COMPLETE"] + counts["PRUNED"]
    goal = f"{finished}/{n_trials}" if n_trials else str(finished)
    return "  ".join(f"{k} {v}" for k, v in counts.items()) + f"  ({goal} finished)"


def output_root(plan_or_tree: StudyPlan | dict[str, Any], study_name: str, output_dir: Path | None = None) -> Path:
    """Where trial folders go: ``OUTPUT_DIR/<study>/trial-<n>`` (default: the config's logging.output_dir)."""
    tree = plan_or_tree.base_tree if isinstance(plan_or_tree, StudyPlan) else plan_or_tree
    base = Path(output_dir) if output_dir is not None else Path(tree["logging"]["output_dir"])
    return base / study_name
