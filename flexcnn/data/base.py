"""The shapes data takes between a source and the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset


@dataclass
class ImageTensors:
    """A split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def subset(self, index: torch.Tensor) -> ImageTensors:
        return ImageTensors(self.images[index], self.labels[index])


class StreamedImages(Dataset[tuple[torch.Tensor, int]]):
    """A split read from disk per item: decoded to uint8 (C, size, size) on access."""

    def __init__(self, files: list[Path], labels: list[int], *, size: int, channels: int) -> None:
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from flexcnn.data.decode import decode_image

        return decode_image(self.files[index], self.size, self.channels), int(self.labels[index])

    def subset(self, index: torch.Tensor) -> StreamedImages:
        picked = index.tolist()
        return StreamedImages(
            [self.files[i] for i in picked],
            [int(self.labels[i]) for i in picked],
            size=self.size,
            channels=self.channels,
        )


Split = ImageTensors | StreamedImages


@dataclass
class DataSplits:
    """Train, validation and test splits of one data set, with its class names."""

    train: Split
    val: Split
    test: Split | None
    classes: list[str]
    channels: int
    image_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, split: str = "train") -> list[int]:
        labels = getattr(self, split).targets
        return torch.bincount(labels, minlength=self.num_classes).tolist()
