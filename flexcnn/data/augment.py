"""Per-batch preprocessing and augmentation on the batch's device (the airbench way).

Loaders hand over uint8 batches; ``BatchTransform`` turns them into normalised
float batches of the model's channel count and size, and on training batches
applies a per-sample random affine warp (flip, shift, rotation, scale) in one
``grid_sample`` call plus brightness/contrast jitter. torchvision's v2
transforms draw one set of parameters per call, so applying them per sample
on a batch would need a Python loop; a batched affine warp does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentPreset:
    """Ranges of the random warp; shift is a fraction of the image size."""

    shift: float = 0.0
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0

    @property
    def warps(self) -> bool:
        return bool(self.shift or self.rotate_deg or self.scale != (1.0, 1.0) or self.flip)


PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset(),
    "light": AugmentPreset(shift=1 / 16, flip=True),
    # pad-and-crop by 1/8 of the size, flip, small rotation: the usual CIFAR recipe
    "standard": AugmentPreset(shift=1 / 8, rotate_deg=10, flip=True),
    # adds a random-resized-crop style zoom and colour jitter
    "strong": AugmentPreset(shift=1 / 8, rotate_deg=15, scale=(0.8, 1.2), flip=True, brightness=0.2, contrast=0.2),
}

_LUMA = (0.299, 0.587, 0.114)


class BatchTransform:
    """uint8 (N, C, H, W) -> normalised float (N, C', S, S), augmented when training."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        preset: str = "none",
        hflip: bool = True,
        channels_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = in_size, out_size
        base = PRESETS[preset]
        self.preset = AugmentPreset(
            base.shift, base.rotate_deg, base.scale, base.flip and hflip, base.brightness, base.contrast
        )
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.luma = torch.tensor(_LUMA, device=self.device).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: Tensor, *, train: bool, generator: torch.Generator | None = None) -> Tensor:
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        x = self._match_channels(x)
        if self.in_size != self.out_size:
            x = F.interpolate(
                x,
                size=(self.out_size, self.out_size),
                mode="bilinear",
                align_corners=False,
                antialias=self.out_size < self.in_size,
            )
        if train:
            x = self._augment(x, generator)
        x = (x - self.mean) * self.inv_std
        return x.contiguous(memory_format=self.memory_format)

    def _match_channels(self, x: Tensor) -> Tensor:
        if self.in_channels == self.out_channels:
            return x
        if self.out_channels == 3:
            return x.expand(-1, 3, -1, -1)
        return (x * self.luma).sum(dim=1, keepdim=True)

    def _augment(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        p = self.preset
        n = x.shape[0]

        def uniform(low: float, high: float) -> Tensor:
            return torch.rand(n, device=x.device, generator=gen) * (high - low) + low

        if p.warps:
            angle = uniform(-p.rotate_deg, p.rotate_deg) * (math.pi / 180)
            scale = uniform(*p.scale)
            sign = torch.ones(n, device=x.device)
            if p.flip:
                sign = torch.where(torch.rand(n, device=x.device, generator=gen) < 0.5, -sign, sign)
            # affine_grid works in [-1, 1] coordinates: a shift of f*size pixels is 2f.
            tx, ty = uniform(-2 * p.shift, 2 * p.shift), uniform(-2 * p.shift, 2 * p.shift)
            cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
            theta = torch.stack(
                [
                    torch.stack([cos * sign, -sin, tx], dim=1),
                    torch.stack([sin * sign, cos, ty], dim=1),
                ],
                dim=1,
            )
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.brightness or p.contrast:
            bright = uniform(1 - p.brightness, 1 + p.brightness).view(n, 1, 1, 1)
            contrast = uniform(1 - p.contrast, 1 + p.contrast).view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean) * bright
            x = x.clamp_(0.0, 1.0)
        return x
