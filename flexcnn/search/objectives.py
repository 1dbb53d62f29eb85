"""What a study optimises: its metric, and optionally model size and inference latency.

An objective is written ``NAME[:GOAL]`` (``val/acc:maximize``, ``params:minimize``):

* a per-epoch metric, ``val/acc``, ``val/loss`` or ``val/f1_macro``: the best value over the
  trial's epochs (what best.pt holds). A study has exactly one; it is ``train.monitor``, so
  best.pt, early stopping and (single-objective) pruning watch it.
* ``params/trainable`` (``params``): trainable parameters when training starts.
* ``params/total``: all parameters, frozen ones included (fine-tuned backbones).
* ``latency_ms`` (``latency``): milliseconds per image of a forward pass in eval mode on the
  trial's device, with the run's precision and layout (measured by ``flexcnn.finish``).

Sizes and latency are costs: their goal is always ``minimize``. One objective is a normal
Optuna study; two or more make a multi-objective study whose result is a Pareto front.
This module imports neither optuna nor torch: the sweep-file reader and the CLI use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flexcnn.errors import ConfigError

# The per-epoch keys run() logs that can drive a study; the same names are
# train.monitor's choices, so the objective, the pruning signal and best.pt agree.
METRICS = {"val/acc": "maximize", "val/loss": "minimize", "val/f1_macro": "maximize"}
# Cost objectives and the run summary key each is read from.
COSTS = {"params/trainable": "params/trainable", "params/total": "params/total", "latency_ms": "latency_ms_per_image"}
ALIASES = {"params": "params/trainable", "latency": "latency_ms", "latency_ms_per_image": "latency_ms"}
GOALS = ("maximize", "minimize")
CHOICES = ", ".join([*METRICS, *COSTS, *ALIASES])
# Samplers for a study of several objectives: W&B's method picks one as for a single objective,
# except that ``bayes`` means NSGA-II (see README: why not TPE); cmaes cannot do it at all.
MULTI_METHOD_SAMPLER = {"grid": "grid", "random": "random", "bayes": "nsga2"}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: what is optimised and which way."""

    name: str
    direction: str  # maximize | minimize

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"

    @property
    def is_metric(self) -> bool:
        return self.name in METRICS


def parse_objective(item: Any, where: str = "--objective") -> ObjectiveSpec:
    """``NAME[:GOAL]`` or ``{name: NAME, goal: GOAL}`` -> ObjectiveSpec; ConfigError naming ``where``."""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"name", "goal"})
        if unknown or "name" not in item:
            raise ConfigError(f"{where}: expected {{name: NAME, goal: maximize|minimize}}, got {dict(item)!r}")
        name, goal = item["name"], item.get("goal")
    elif isinstance(item, str):
        name, _, goal = item.partition(":")
        goal = goal or None
    else:
        raise ConfigError(f"{where}: expected NAME[:GOAL] such as val/acc:maximize, got {item!r}")
    name = ALIASES.get(str(name).strip(), str(name).strip())
    natural = METRICS.get(name) or ("minimize" if name in COSTS else None)
    if natural is None:
        raise ConfigError(f"{where}: unknown objective {name!r}; expected one of {CHOICES}")
    if goal is None:
        return ObjectiveSpec(name, natural)
    if goal not in GOALS:
        raise ConfigError(f"{where}: the goal of {name} must be maximize or minimize, got {goal!r}")
    if goal != natural:
        # Maximising a loss or a parameter count is always a typo, and best.pt would disagree with the study.
        raise ConfigError(f"{where}: {name}:{goal} is the wrong way round (use {name}:{natural})")
    return ObjectiveSpec(name, goal)


def objectives_from_cli(items: Sequence[str]) -> tuple[ObjectiveSpec, ...]:
    """The full list given by repeated ``--objective``: exactly one metric, no repeats."""
    specs = tuple(parse_objective(item) for item in items)
    return check_objectives(specs, "--objective")


def check_objectives(specs: Sequence[ObjectiveSpec], where: str) -> tuple[ObjectiveSpec, ...]:
    """Exactly one per-epoch metric (the monitor) and each objective once; the metric goes first."""
    metrics = [s for s in specs if s.is_metric]
    if len(metrics) != 1:
        found = ", ".join(s.name for s in metrics) or "none"
        raise ConfigError(
            f"{where}: a study needs exactly one of {', '.join(METRICS)} among its objectives "
            f"(it is what best.pt and early stopping watch); found {found}"
        )
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{where}: objective(s) {', '.join(repeated)} given more than once")
    return (metrics[0], *(s for s in specs if not s.is_metric))


def sweep_objectives(metric: str, direction: str, extra: Any, where: str) -> tuple[ObjectiveSpec, ...]:
    """The sweep's ``metric`` followed by ``controller.objectives`` (which may repeat the metric)."""
    if extra is None:
        return (ObjectiveSpec(metric, direction),)
    if not isinstance(extra, list) or not extra:
        raise ConfigError(
            f"{where}: controller.objectives must be a list such as [params:minimize, latency_ms:minimize]"
        )
    specs = [parse_objective(item, f"{where}: controller.objectives") for item in extra]
    own = [s for s in specs if s.name == metric]
    if own and own[0].direction != direction:
        raise ConfigError(f"{where}: controller.objectives has {own[0]}, but metric.goal is {direction}")
    rest = [s for s in specs if s.name != metric]
    return check_objectives([ObjectiveSpec(metric, direction), *rest], f"{where}: controller.objectives")


def encode(specs: Iterable[ObjectiveSpec]) -> list[str]:
    """``["val/acc:maximize", "params/trainable:minimize"]``: how a study stores them."""
    return [str(s) for s in specs]


def decode(items: Iterable[str]) -> tuple[ObjectiveSpec, ...]:
    return tuple(parse_objective(item, "stored study objectives") for item in items)


def multi_sampler(method: str, override: str | None) -> str:
    """The sampler for several objectives: ``override`` when given, else by method (bayes -> NSGA-II)."""
    if override is not None:
        if override in SINGLE_OBJECTIVE_SAMPLERS:
            raise ConfigError(
                f"--sampler {override} optimises a single objective; for several use nsga2, tpe, gp, random, "
                "qmc or grid"
            )
        return override
    return MULTI_METHOD_SAMPLER[method]


def objective_values(
    specs: Sequence[ObjectiveSpec], best_value: float | None, summary: Mapping[str, Any]
) -> tuple[float, ...] | str:
    """The trial's value of each objective, or the reason one is missing."""
    values: list[float] = []
    for spec in specs:
        value = best_value if spec.is_metric else summary.get(COSTS[spec.name])
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"the run recorded no {spec.name} ({COSTS.get(spec.name, 'best value')} missing from its summary)"
        values.append(float(value))
    return tuple(values)


def describe(specs: Sequence[ObjectiveSpec]) -> str:
    """``val/acc (maximize)`` or ``val/acc (maximize), params/trainable (minimize)``."""
    return ", ".join(f"{s.name} ({s.direction})" for s in specs)
