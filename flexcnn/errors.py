"""Errors that mean "the user asked for something we cannot do".

The CLI turns a ``UserError`` into one line on stderr and exit code 2, with no
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: config, data, checkpoint, storage, CLI."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, override or sweep YAML is invalid."""


class DataError(UserError):
    """A data source is missing, unreadable or inconsistent."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, unsafe or from another model."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops and says at which epoch."""
