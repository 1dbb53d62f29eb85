"""Reporters by name: ``register_reporter(name, factory)``, ``build_reporters(context)``.

A factory takes a ``ReporterContext`` (the run's config and what the caller
knows besides) and returns a reporter, or None when that reporter is not wanted
for this run (W&B disabled, no Optuna trial). ``flexcnn train`` and the Optuna
objective build their reporters here; tests/contracts/test_reporters.py runs
every registered reporter through the same suite.

Like timm's ``_registry.py`` this module imports no reporter: each one is
registered in ``flexcnn/reporters/__init__.py``, so a new reporter is one new
file plus one registration line there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flexcnn.reporters.base import Reporter

if TYPE_CHECKING:
    import optuna

    from flexcnn.config import RunConfig


@dataclass(frozen=True)
class ReporterContext:
    """What reporter factories may use: the run's config and what its caller knows."""

    config: RunConfig
    console: bool = True  # progress and a summary on the terminal
    wandb_mode: str | None = None  # None: the config's logging.wandb.mode decides
    wandb_group: str | None = None
    wandb_name: str | None = None
    wandb_tags: tuple[str, ...] = ()
    wandb_extra_config: Mapping[str, Any] = field(default_factory=dict)  # merged into the W&B run's config
    trial: optuna.trial.Trial | None = None  # the Optuna trial this run is, for pruning
    metric: str | None = None  # what the trial reports; None: the config's train.monitor

    @property
    def trial_metric(self) -> str:
        return self.metric or self.config.train.monitor


ReporterFactory = Callable[[ReporterContext], Reporter | None]

_FACTORIES: dict[str, ReporterFactory] = {}


def register_reporter(name: str, factory: ReporterFactory) -> None:
    """Make ``factory`` build the reporter called ``name``; reporters are built in registration order."""
    if name in _FACTORIES:
        raise ValueError(f"a reporter named {name!r} is already registered")
    _FACTORIES[name] = factory


def available_reporters() -> list[str]:
    """The registered reporter names, in the order they are built."""
    return list(_FACTORIES)


def build_reporter(name: str, context: ReporterContext) -> Reporter | None:
    """The reporter ``name`` for ``context``, or None when it is not wanted for this run."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"no reporter named {name!r}; registered: {', '.join(_FACTORIES)}") from None
    return factory(context)


def build_reporters(context: ReporterContext) -> list[Reporter]:
    """Every registered reporter that ``context`` asks for, in registration order."""
    reporters = [build_reporter(name, context) for name in _FACTORIES]
    return [reporter for reporter in reporters if reporter is not None]
