"""Data sources by name: the registry. Each source returns ``DataSplits`` of uint8 images.

This module imports no source. Each source file registers itself with
``@source(...)`` and ``flexcnn/data/__init__.py`` imports the source files, so a
new source is one file plus one import line there.

Sources that fit in memory return ``ImageTensors``; image folders too large for
``data.resident_max_mb`` return ``StreamedImages`` that decode per item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flexcnn.data.base import DataSplits
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig


@dataclass(frozen=True)
class Target:
    """The channel count and square size the model wants, where the source can honour it."""

    channels: int | None = None
    image_size: int | None = None


Loader = Callable[[DataConfig, Target], DataSplits]
# Writes a tiny data set in the source's own on-disk format under the given folder and returns
# the data-config fields that read it (data.root, ...): the contract tests run every source on it.
Example = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class SourceEntry:
    """One registered data source."""

    name: str
    load: Loader
    description: str
    # data.root must be given (a folder or file of the user's); checked when the config loads.
    needs_root: bool = False
    # None: the source reads files that cannot be faked (checksummed downloads); the
    # contract tests then check that it fails with a DataError when they are missing.
    example: Example | None = None


def no_files(folder: Path) -> dict[str, Any]:
    """The example of a source embedded in an installed package: nothing to write, nothing to set."""
    return {}


_SOURCES: dict[str, SourceEntry] = {}


def source(
    name: str, description: str, *, needs_root: bool = False, example: Example | None = None
) -> Callable[[Loader], Loader]:
    """Register a loader as data source ``name``."""

    def wrap(fn: Loader) -> Loader:
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is registered twice")
        _SOURCES[name] = SourceEntry(name, fn, description, needs_root, example)
        return fn

    return wrap


def source_entries() -> list[SourceEntry]:
    """Every registered source, in registration order."""
    return list(_SOURCES.values())


def source_names() -> tuple[str, ...]:
    """The registered source names, in registration order (the order config errors list them in)."""
    return tuple(_SOURCES)


def available_sources() -> dict[str, str]:
    """Registered source names and their descriptions, sorted by name."""
    return {name: entry.description for name, entry in sorted(_SOURCES.items())}


def load_splits(cfg: DataConfig, target: Target = Target()) -> DataSplits:
    """Load the configured source and split it into train/val(/test)."""
    try:
        entry = _SOURCES[cfg.source]
    except KeyError:
        raise DataError(
            f"data.source: unknown source {cfg.source!r}; available: {', '.join(sorted(_SOURCES))}"
        ) from None
    splits = entry.load(cfg, target)
    if cfg.limit is not None and len(splits.train) > cfg.limit:
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(cfg.split_seed))[: cfg.limit]
        splits.train = splits.train.subset(keep.sort().values)
    if splits.num_classes < 2:
        raise DataError(f"data source {cfg.source!r} has {splits.num_classes} class; a classifier needs at least 2")
    return splits
