"""Torchvision's own data sets by name, downloaded when online, with a clear offline error."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexcnn.data.base import DataSplits, ImageTensors
from flexcnn.data.fer_csv import FER_CLASSES
from flexcnn.data.sources import Example, source
from flexcnn.data.splits import stratified_split
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig


@dataclass(frozen=True)
class _Set:
    cls_name: str  # the torchvision.datasets class
    files: str  # what must exist under data.root, for the offline message
    split_arg: str  # how the class is asked for a split: train=True/False, or split="train"/"test"
    # MNIST's IDX files carry no checksum, so a tiny copy can be written for tests; CIFAR,
    # SVHN and FER2013 files are checked against their checksums and cannot be faked.
    idx_files: bool = False


_SETS: dict[str, _Set] = {
    "cifar10": _Set("CIFAR10", "cifar-10-batches-py/ (from cifar-10-python.tar.gz)", "train"),
    "cifar100": _Set("CIFAR100", "cifar-100-python/ (from cifar-100-python.tar.gz)", "train"),
    "mnist": _Set("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unzipped)", "train", True),
    "fashionmnist": _Set(
        "FashionMNIST", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unzipped)", "train", True
    ),
    "svhn": _Set("SVHN", "train_32x32.mat and test_32x32.mat", "split"),
    "fer2013": _Set("FER2013", "fer2013/train.csv and fer2013/test.csv (from Kaggle; no download)", "split"),
}


def default_data_root() -> Path:
    """Where torchvision sets are downloaded when data.root is not given (``$FLEXCNN_DATA``)."""
    return Path(os.environ.get("FLEXCNN_DATA", Path.home() / ".cache" / "flexcnn" / "data"))


def _as_tensors(dataset: Any) -> ImageTensors:
    data = dataset.data if hasattr(dataset, "data") else None
    if data is None:  # FER2013 keeps (pixels, label) rows
        images = np.stack([np.asarray(dataset[i][0], dtype=np.uint8) for i in range(len(dataset))])
        labels = np.array([dataset[i][1] for i in range(len(dataset))])
    else:
        images = np.asarray(data, dtype=np.uint8)
        labels = np.asarray(getattr(dataset, "targets", getattr(dataset, "labels", None)))
    tensor = torch.from_numpy(images)
    if tensor.ndim == 3:  # (N, H, W) grey
        tensor = tensor.unsqueeze(1)
    elif tensor.shape[-1] in (1, 3):  # (N, H, W, C)
        tensor = tensor.permute(0, 3, 1, 2)
    return ImageTensors(tensor.contiguous(), torch.from_numpy(labels.astype(np.int64)))


def _open(name: str, root: Path, split: str, download: bool) -> Any:
    import torchvision.datasets as tvd

    spec = _SETS[name]
    cls = getattr(tvd, spec.cls_name)
    kwargs: dict[str, Any] = {"split": split} if spec.split_arg == "split" else {"train": split == "train"}
    if name != "fer2013":
        kwargs["download"] = download
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:  # urllib's URLError is an OSError
        raise DataError(
            f"data.source {name!r}: could not load it from {root} ({exc.__class__.__name__}: {exc}). "
            f"Without internet, place {spec.files} under {root} (data.root), "
            "or use source imagefolder with your own copy"
        ) from None


def load_torchvision_set(cfg: DataConfig) -> DataSplits:
    """The set's own train and test splits, validation carved out of train."""
    root = Path(cfg.root) if cfg.root else default_data_root()
    train = _as_tensors(_open(cfg.source, root, "train", cfg.download))
    test = _as_tensors(_open(cfg.source, root, "test", cfg.download))
    classes_attr = getattr(_open(cfg.source, root, "test", False), "classes", None)
    num = int(max(train.labels.max(), test.labels.max())) + 1
    classes = list(classes_attr) if classes_attr else [str(i) for i in range(num)]
    if cfg.source == "fer2013":
        classes = list(FER_CLASSES)
    keep, val = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
    return DataSplits(
        train.subset(keep),
        train.subset(val),
        test,
        classes,
        channels=train.images.shape[1],
        image_size=train.images.shape[-1],
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an uncompressed IDX file of unsigned bytes (MNIST's on-disk format)."""
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _idx_example(cls_name: str) -> Example:
    """An MNIST-style set in ``<folder>/<cls_name>/raw``: 6 training and 2 test images per digit."""

    def write(folder: Path) -> dict[str, Any]:
        raw = folder / cls_name / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 60), ("t10k", 20)):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
        return {"root": folder, "download": False}

    return write


def _register_all() -> None:
    for name, spec in _SETS.items():
        how = "place the Kaggle CSVs under data.root" if name == "fer2013" else "downloads when online"
        example = _idx_example(spec.cls_name) if spec.idx_files else None
        source(name, f"torchvision {spec.cls_name} ({how})", example=example)(
            lambda cfg, target: load_torchvision_set(cfg)
        )


_register_all()
