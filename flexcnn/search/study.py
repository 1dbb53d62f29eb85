"""Plan a study from a sweep file, and create or join it in a storage (summaries: leaderboard.py).

A study stores its settings as the user attribute ``flexcnn``: metric,
direction, objectives, sampler, pruner, trial budget, the sweep and a
fingerprint of its search space. Its objectives are named in Optuna itself
(``study.set_metric_names``), so the dashboard and Optuna's plots label them.
A worker that joins later (another machine, a container) gets the same
objectives, sampler, pruner and budget from there, and is refused when its
sweep file describes a different search space.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flexcnn.config import RunConfig, error_field, load_config, validate_config
from flexcnn.errors import ConfigError, UserError
from flexcnn.overrides import apply_overrides
from flexcnn.search.leaderboard import (  # noqa: F401  re-exported: they were here first
    STATES,
    LeaderRow,
    format_counts,
    format_leaderboard,
    leaderboard,
    state_counts,
)
from flexcnn.search.objectives import ObjectiveSpec, decode, encode, multi_sampler, objectives_from_cli
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
    objectives: list[str] = field(default_factory=list)  # "name:goal", metric first; [] in older studies

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def specs(self) -> tuple[ObjectiveSpec, ...]:
        """What the study optimises, in the order of the trial's values."""
        return decode(self.objectives) if self.objectives else (ObjectiveSpec(self.metric, self.direction),)

    @property
    def multi(self) -> bool:
        return len(self.specs) > 1

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
    notices: list[str] = field(default_factory=list)  # one line each, for the user starting the study

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
    objectives: Sequence[str] | None = None,
) -> StudyPlan:
    """Translate ``sweep``; fail now (ConfigError) on anything a trial would fail on later.

    ``objectives`` (``--objective``, full list) replaces the sweep's metric and controller.objectives.
    """
    specs = objectives_from_cli(objectives) if objectives else (sweep.objectives or _single(sweep))
    metric = specs[0].name
    space = build_space(sweep.parameters)
    base = load_config(sweep.base_config, sweep.fixed_overrides)
    tree = base.to_dict()
    for key in ("project", "entity"):
        if sweep.raw.get(key) and not tree["logging"]["wandb"].get(key):
            tree["logging"]["wandb"][key] = sweep.raw[key]
    tree = apply_overrides(tree, space.constants)
    monitor = space.constants.get("train.monitor", metric)
    if monitor != metric or "train.monitor" in space.names:
        raise ConfigError(
            f"sweep {sweep.path or ''}: train.monitor follows metric.name (or the --objective metric), {metric}; "
            "do not sweep or fix it"
        )
    tree["train"]["monitor"] = metric
    # Constants and parameters can depend on each other (data.mean with a swept data.std),
    # so check one whole trial: the first value of every parameter.
    validate_config(
        apply_overrides(tree, {p.name: p.first() for p in space.params}),
        source=f"{sweep.path or 'sweep'}: base config + constants + the first value of each parameter",
    )

    _check_every_value(tree, space, str(sweep.path or "sweep"))

    multi = len(specs) > 1
    chosen_sampler = multi_sampler(sweep.method, sampler) if multi else sampler_name(sweep.method, sampler)
    chosen_pruner, notices = _pruner_for(sweep, pruner, multi)
    budget = _budget(sweep, space, chosen_sampler, n_trials)
    largest = space.largest("train.epochs")
    max_epochs = int(largest) if isinstance(largest, int | float) else int(tree["train"]["epochs"])
    settings = StudySettings(
        metric=metric,
        direction=specs[0].direction,
        sampler=chosen_sampler,
        pruner=chosen_pruner,
        n_trials=budget,
        fingerprint=space.fingerprint,
        target=sweep.target if metric == sweep.metric else None,
        sweep_file=str(sweep.path) if sweep.path else None,
        objectives=encode(specs),
    )
    plan = StudyPlan(sweep, space, tree, settings, max_epochs, notices)
    plan.pruner()  # hyperband bounds are checked here, before any worker starts
    return plan


def _single(sweep: SweepSpec) -> tuple[ObjectiveSpec, ...]:
    return (ObjectiveSpec(sweep.metric, sweep.direction),)


def _pruner_for(sweep: SweepSpec, override: str | None, multi: bool) -> tuple[str, list[str]]:
    """The pruner, and a notice when the sweep's early_terminate cannot apply.

    Optuna prunes on one reported value per step (``trial.report``), which a study of several
    objectives does not have: a trial that is worse on accuracy may be the smallest model.
    """
    if not multi:
        chosen = pruner_name(sweep.early_terminate, override, sweep.pruner)
        if override is None and sweep.pruner and sweep.early_terminate:
            return chosen, [
                f"pruner {chosen} from controller.pruner; W&B agents of this file apply its early_terminate "
                "(W&B's hyperband rule), as --pruner hyperband does here"
            ]
        return chosen, []
    if override not in (None, "none"):
        raise ConfigError(f"--pruner {override}: Optuna cannot prune a study of several objectives; use --pruner none")
    asked = {"early_terminate": sweep.early_terminate, "controller.pruner": sweep.pruner}
    ignored = [key for key, value in asked.items() if value]
    if ignored:
        return "none", [
            f"pruning is off: Optuna cannot prune a study of several objectives ({' and '.join(ignored)} ignored)"
        ]
    return "none", []


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
    objectives: Sequence[str] | None = None,
) -> StudyPlan:
    """Plan for ``sweep``, taking objectives, sampler, pruner and budget from the stored study where not given."""
    stored = peek_settings(storage, name)
    if stored is not None:
        sampler = sampler or stored.sampler
        pruner = pruner or stored.pruner
        n_trials = n_trials or stored.n_trials
        objectives = objectives or (stored.objectives if len(stored.objectives) > 1 else None)
    return plan_study(sweep, n_trials=n_trials, sampler=sampler, pruner=pruner, objectives=objectives)


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

    specs = plan.settings.specs
    with storage_lock(storage, f"study:{name}"):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=[s.direction for s in specs],
            sampler=plan.sampler(seed=seed, worker_index=worker_index),
            pruner=plan.pruner(),
            load_if_exists=True,
        )
        directions = [d.name.lower() for d in study.directions]
        if study.metric_names is None and len(directions) == len(specs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([s.name for s in specs])  # the dashboard's and the plots' axis names
        stored = StudySettings.from_attr(study.user_attrs.get(ATTR))
        if stored is None:
            study.set_user_attr(ATTR, plan.settings.to_attr())
            return study
    check_compatible(name, stored, plan.settings, directions)
    if update_budget and stored.n_trials != plan.settings.n_trials:
        study.set_user_attr(ATTR, {**stored.to_attr(), "n_trials": plan.settings.n_trials})
    return study


def check_compatible(name: str, stored: StudySettings, mine: StudySettings, directions: Sequence[str]) -> None:
    """Refuse to mix trials from different search spaces, metrics or objectives in one study."""
    problems = []
    if stored.fingerprint != mine.fingerprint:
        problems.append("its search space (parameters) differs from this sweep file's")
    if stored.specs != mine.specs:
        theirs, ours = (", ".join(map(str, s.specs)) for s in (stored, mine))
        problems.append(f"it optimises {theirs}, this sweep {ours}")
    elif list(directions) != [s.direction for s in mine.specs]:
        problems.append(f"it is set to {', '.join(directions)}, this sweep to {mine.direction}")
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


def output_root(plan_or_tree: StudyPlan | dict[str, Any], study_name: str, output_dir: Path | None = None) -> Path:
    """Where trial folders go: ``OUTPUT_DIR/<study>/trial-<n>`` (default: the config's logging.output_dir)."""
    tree = plan_or_tree.base_tree if isinstance(plan_or_tree, StudyPlan) else plan_or_tree
    base = Path(output_dir) if output_dir is not None else Path(tree["logging"]["output_dir"])
    return base / study_name
