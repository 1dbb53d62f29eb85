"""Reporters: console, run-folder files, W&B and Optuna behind one contract (``Reporter``).

Each reporter is registered here by name with the factory that builds it from a
``ReporterContext`` (see ``registry.py``). A new reporter: one module that
subclasses ``Reporter``, plus one ``register_reporter`` line below; the
contract suite (tests/contracts/test_reporters.py) picks it up.
"""

from __future__ import annotations

from flexcnn.reporters.base import Reporter, RunInfo, RunResult, StopRun
from flexcnn.reporters.console import ConsoleReporter
from flexcnn.reporters.files import FilesReporter
from flexcnn.reporters.optuna import OptunaPruningReporter
from flexcnn.reporters.registry import (
    ReporterContext,
    available_reporters,
    build_reporter,
    build_reporters,
    register_reporter,
)


def _console(context: ReporterContext) -> Reporter | None:
    return ConsoleReporter(progress=context.config.logging.progress) if context.console else None


def _wandb(context: ReporterContext) -> Reporter | None:
    # Imported when reporters are built, not with this package; it imports wandb only when W&B is on.
    from flexcnn.reporters.wandb import wandb_reporter_for

    return wandb_reporter_for(
        context.config,
        group=context.wandb_group,
        name=context.wandb_name,
        tags=context.wandb_tags,
        extra_config=context.wandb_extra_config,
        mode=context.wandb_mode,
    )


def _optuna(context: ReporterContext) -> Reporter | None:
    return OptunaPruningReporter(context.trial, context.trial_metric) if context.trial is not None else None


register_reporter("files", lambda context: FilesReporter())
register_reporter("console", _console)
register_reporter("wandb", _wandb)
register_reporter("optuna", _optuna)

__all__ = [
    "ConsoleReporter",
    "FilesReporter",
    "OptunaPruningReporter",
    "Reporter",
    "ReporterContext",
    "RunInfo",
    "RunResult",
    "StopRun",
    "available_reporters",
    "build_reporter",
    "build_reporters",
    "register_reporter",
]
