"""Seeded, stratified splits."""

from __future__ import annotations

import math

import numpy as np
import torch

from flexcnn.data.base import DataSplits, ImageTensors
from flexcnn.errors import DataError
from flexcnn.sections import DataConfig


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
    keep, out = _stratified_shuffle_split(labels.numpy(), held, seed)
    return torch.from_numpy(keep).sort().values, torch.from_numpy(out).sort().values


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


# scikit-learn's train_test_split(stratify=...) (StratifiedShuffleSplit, BSD-3-Clause), step for step and
# with the same random draws, so splits stay what they were; importing sklearn cost about a second per trial.


def _stratified_shuffle_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a stratified split with ``n_test`` held out; unordered."""
    n_train = len(y) - n_test
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        members = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws closest to proportional that sum to ``n_draws``; ties broken at random."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
