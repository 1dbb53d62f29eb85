"""Data, model and batch transform that fit each other: what run() builds before the first epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flexcnn.checkpoint import InputInfo
from flexcnn.config import RunConfig
from flexcnn.data import DataSplits, Target, load_splits
from flexcnn.data.augment import BatchTransform
from flexcnn.data.stats import channel_stats
from flexcnn.errors import ConfigError
from flexcnn.imagenet import IMAGENET_MEAN, IMAGENET_STD
from flexcnn.models import InputRequest, InputSpec, ModelAdapter, build_model, input_request


@dataclass
class Pipeline:
    """The loaded data, the model built for it, and the transform from stored images to model input."""

    splits: DataSplits
    input: InputInfo
    adapter: ModelAdapter
    transform: BatchTransform


def build_pipeline(config: RunConfig, device: torch.device, channels_last: bool = False) -> Pipeline:
    """Load data and build the model and batch transform that fit each other."""
    request = input_request(config.model)
    channels = config.data.channels or request.channels
    size = config.data.image_size or request.image_size
    splits = load_splits(config.data, Target(channels=channels, image_size=size))
    channels = channels or splits.channels
    size = size or splits.image_size
    mean, std = _normalisation(config, request, splits, channels)
    info = InputInfo(
        channels=channels,
        image_size=size,
        mean=mean,
        std=std,
        source_channels=splits.channels,
        source_size=splits.image_size,
    )
    adapter = build_model(config.model, InputSpec(channels=channels, image_size=size, num_classes=splits.num_classes))
    transform = batch_transform(
        info,
        device,
        channels_last=channels_last,
        preset=config.data.augment,
        hflip=config.data.hflip,
    )
    return Pipeline(splits, info, adapter, transform)


def batch_transform(
    info: InputInfo,
    device: torch.device,
    *,
    channels_last: bool = False,
    preset: str = "none",
    hflip: bool = True,
) -> BatchTransform:
    """The transform from the data set's stored images to what the model of ``info`` takes.

    run() builds it with the run's augmentation; evaluate.py rebuilds it from a checkpoint's
    ``input`` with none, so a checkpoint is evaluated on exactly the inputs it was validated on.
    """
    return BatchTransform(
        in_channels=info.source_channels,
        out_channels=info.channels,
        in_size=info.source_size,
        out_size=info.image_size,
        mean=info.mean,
        std=info.std,
        preset=preset,
        hflip=hflip,
        channels_last=channels_last,
        device=device,
    )


def _normalisation(
    config: RunConfig, request: InputRequest, splits: DataSplits, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std: given in the config, none, ImageNet's (pretrained models), or the data's own."""
    if config.data.mean is not None and config.data.std is not None:
        mean, std = tuple(config.data.mean), tuple(config.data.std)
        if len(mean) != channels:
            raise ConfigError(f"data.mean has {len(mean)} values; the model's input has {channels} channel(s)")
        return mean, std
    if config.data.normalize == "none":
        return (0.0,) * channels, (1.0,) * channels
    if config.data.normalize == "imagenet" or request.mean is not None:
        mean = request.mean or IMAGENET_MEAN
        std = request.std or IMAGENET_STD
        if channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        return mean, std
    return channel_stats(splits.train, channels)
