"""Batches of uint8 images and labels on the training device.

In-memory splits are indexed directly on the device (no DataLoader, no worker
processes, no per-image Python); streamed folders go through a DataLoader
whose workers decode files, or, when the folder has a decoded-image cache,
read whole batches from its memory map.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from flexcnn.data.base import ImageTensors, Split
from flexcnn.hardware import loader_workers

Batch = tuple[Tensor, Tensor]


class ResidentLoader:
    """Shuffled (or weighted) batches drawn from uint8 tensors that live on ``device``."""

    def __init__(
        self,
        data: ImageTensors,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        drop_last: bool,
        generator: torch.Generator | None = None,
        weights: Tensor | None = None,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator, self.weights = generator, weights

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        order = _order(n, self.shuffle, self.weights, self.generator).to(self.images.device)
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[index], self.labels[index]


class _TensorItems(Dataset[tuple[Tensor, int]]):
    def __init__(self, data: ImageTensors) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.data.images[i], int(self.data.labels[i])


class _Sampler(torch.utils.data.Sampler[int]):
    def __init__(self, n: int, shuffle: bool, weights: Tensor | None, generator: torch.Generator | None) -> None:
        self.n, self.shuffle, self.weights, self.generator = n, shuffle, weights, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(_order(self.n, self.shuffle, self.weights, self.generator).tolist())


class _BatchReads(Dataset[Batch]):
    """Items are whole batches: ``data.read_batch(indices)`` (one fancy-indexed read, no per-image Python)."""

    def __init__(self, data: Split) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: list[int]) -> Batch:
        return self.data.read_batch(index)  # type: ignore[union-attr]


class StreamingLoader:
    """A DataLoader over a split, moving each uint8 batch to ``device``.

    Pinned memory on CUDA (so the copy is asynchronous), persistent workers (no
    start-up per epoch) and 4 batches in flight per worker. Splits that can
    read a whole batch at once (a decoded-image cache) are read batch by batch,
    in this process by default: a memory-mapped read costs less than shipping
    the batch from a worker process.
    """

    def __init__(
        self,
        data: Split,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        drop_last: bool,
        generator: torch.Generator | None = None,
        weights: Tensor | None = None,
        num_workers: int | str = "auto",
    ) -> None:
        self.device = device
        sampler = _Sampler(len(data), shuffle, weights, generator)
        common: dict[str, Any] = {"pin_memory": device.type == "cuda"}
        if hasattr(data, "read_batch"):
            workers = 0 if num_workers == "auto" else int(num_workers)
            dataset: Dataset[Any] = _BatchReads(data)
            batching: dict[str, Any] = {
                "batch_size": None,
                "sampler": BatchSampler(sampler, batch_size, drop_last),
            }
        else:
            workers = loader_workers() if num_workers == "auto" else int(num_workers)
            dataset = _TensorItems(data) if isinstance(data, ImageTensors) else data
            batching = {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last}
        self.loader = DataLoader(
            dataset,
            **batching,
            **common,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in self.loader:
            yield (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))


def _order(n: int, shuffle: bool, weights: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=generator)
    if shuffle:
        return torch.randperm(n, generator=generator)
    return torch.arange(n)


def make_loader(
    data: Split,
    *,
    batch_size: int,
    device: torch.device,
    train: bool,
    resident: bool,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
    num_workers: int | str = "auto",
) -> ResidentLoader | StreamingLoader:
    """The loader for one split: resident when the data are tensors and allowed to be."""
    drop_last = train and len(data) > batch_size
    if resident and isinstance(data, ImageTensors):
        return ResidentLoader(
            data,
            batch_size=batch_size,
            device=device,
            shuffle=train,
            drop_last=drop_last,
            generator=generator,
            weights=weights,
        )
    return StreamingLoader(
        data,
        batch_size=batch_size,
        device=device,
        shuffle=train,
        drop_last=drop_last,
        generator=generator,
        weights=weights,
        num_workers=num_workers,
    )
