"""Seeded, stratified splits."""

from __future__ import annotations

import math

import torch
from sklearn.model_selection import train_test_split

from flexcnn.errors import DataError


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) with about ``fraction`` of each class held out, reproducibly.

    Small sets hold out at least one image per class, so every class appears on both sides.
    """
    n = len(labels)
    counts = torch.bincount(labels)
    classes = int((counts > 0).sum())
    if int(counts[counts > 0].min()) < 2:
        rare = [i for i, c in enumerate(counts.tolist()) if c == 1]
        raise DataError(f"cannot split: class(es) {rare} have a single image; each class needs at least 2")
    held = min(max(math.ceil(fraction * n), classes), n - classes)
    index = torch.arange(n)
    keep, out = train_test_split(index.numpy(), test_size=held, random_state=seed, stratify=labels.numpy())
    return torch.from_numpy(keep).sort().values, torch.from_numpy(out).sort().values
