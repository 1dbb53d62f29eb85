"""Per-channel mean and std of the training split, cached for streamed folders."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from flexcnn.data.base import ImageTensors, Split, StreamedImages

_SAMPLE = 2000  # images read to estimate the statistics of a streamed folder


def channel_stats(split: Split, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per output channel, in [0, 1] units."""
    if isinstance(split, StreamedImages):
        cached = _cache_path(split, channels)
        if cached.is_file():
            data = json.loads(cached.read_text())
            return tuple(data["mean"]), tuple(data["std"])
        pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:_SAMPLE]
        images = torch.stack([split[int(i)][0] for i in pick])
    else:
        images = split.images
    mean, std = _moments(images, channels)
    if isinstance(split, StreamedImages):
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps({"mean": mean, "std": std}))
        os.replace(tmp, cached)
    return tuple(mean), tuple(std)


def _moments(images: torch.Tensor, channels: int) -> tuple[list[float], list[float]]:
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for chunk in images.split(4096):
        x = chunk.to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    if channels != images.shape[1]:
        # grey expanded to RGB repeats the statistics; RGB reduced to grey averages them
        mean = mean.repeat(channels) if channels == 3 else mean.mean().reshape(1)
        std = std.repeat(channels) if channels == 3 else std.mean().reshape(1)
    # Constant images would divide by zero; keep the scale finite.
    return mean.tolist(), std.clamp_min(1e-3).tolist()


def _cache_path(split: StreamedImages, channels: int) -> Path:
    digest = hashlib.sha256()
    for path in split.files:
        digest.update(str(Path(path).resolve()).encode())
    digest.update(f"{split.size}:{split.channels}:{channels}".encode())
    root = Path(os.environ.get("FLEXCNN_CACHE", Path.home() / ".cache" / "flexcnn"))
    return root / "stats" / f"{digest.hexdigest()[:24]}.json"


__all__ = ["ImageTensors", "channel_stats"]
