"""Seeded, stratified splits."""

from __future__ import annotations

import torch
from sklearn.model_selection import train_test_split

from flexcnn.errors import DataError


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) with ``fraction`` of each class held out, reproducibly."""
    index = torch.arange(len(labels))
    counts = torch.bincount(labels)
    stratify = labels.numpy() if int(counts[counts > 0].min()) >= 2 else None
    try:
        keep, held = train_test_split(index.numpy(), test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot split {len(labels)} images into {fraction:.0%} held out: {exc}") from None
    return torch.from_numpy(keep).sort().values, torch.from_numpy(held).sort().values
