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


class RunFailed(RuntimeError):
    """Training could not go on (not a user mistake, not a bug): the run is recorded as failed."""


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite; the run stops and says at which epoch."""


class OutOfMemory(RunFailed):
    """The device ran out of memory in a forward or backward pass."""


class StorageFull(RunFailed):
    """A run-folder file could not be written (disk full, file-size limit, permissions)."""
