"""Torchvision's own data sets by name, downloaded when online, with a clear offline error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexcnn.config import DataConfig
from flexcnn.data.base import DataSplits, ImageTensors
from flexcnn.data.sources import default_data_root, source
from flexcnn.data.splits import stratified_split
from flexcnn.errors import DataError

# name -> (torchvision class, files that must exist under root, how splits are asked for)
_SETS: dict[str, tuple[str, str, str]] = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py/ (from cifar-10-python.tar.gz)", "train"),
    "cifar100": ("CIFAR100", "cifar-100-python/ (from cifar-100-python.tar.gz)", "train"),
    "mnist": ("MNIST", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unzipped)", "train"),
    "fashionmnist": (
        "FashionMNIST",
        "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unzipped)",
        "train",
    ),
    "svhn": ("SVHN", "train_32x32.mat and test_32x32.mat", "split"),
    "fer2013": ("FER2013", "fer2013/train.csv and fer2013/test.csv (from Kaggle; no download)", "split"),
}


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

    cls_name, files, style = _SETS[name]
    cls = getattr(tvd, cls_name)
    kwargs: dict[str, Any] = {"split": split} if style == "split" else {"train": split == "train"}
    if name != "fer2013":
        kwargs["download"] = download
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:  # urllib's URLError is an OSError
        raise DataError(
            f"data.source {name!r}: could not load it from {root} ({exc.__class__.__name__}: {exc}). "
            f"Without internet, place {files} under {root} (data.root), "
            "or use source imagefolder with your own copy"
        ) from None


def load_torchvision_set(cfg: DataConfig) -> DataSplits:
    root = Path(cfg.root) if cfg.root else default_data_root()
    train = _as_tensors(_open(cfg.source, root, "train", cfg.download))
    test = _as_tensors(_open(cfg.source, root, "test", cfg.download))
    classes_attr = getattr(_open(cfg.source, root, "test", False), "classes", None)
    num = int(max(train.labels.max(), test.labels.max())) + 1
    classes = list(classes_attr) if classes_attr else [str(i) for i in range(num)]
    if cfg.source == "fer2013":
        from flexcnn.data.sources import FER_CLASSES

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


for _name in _SETS:
    _how = "place the Kaggle CSVs under data.root" if _name == "fer2013" else "downloads when online"
    source(_name, f"torchvision {_SETS[_name][0]} ({_how})")(lambda cfg, target: load_torchvision_set(cfg))
