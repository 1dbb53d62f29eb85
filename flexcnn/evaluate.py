"""Evaluate a saved checkpoint on its own data split or on other data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from flexcnn.checkpoint import Checkpoint
from flexcnn.config import RunConfig, validate_config
from flexcnn.data import load_splits
from flexcnn.data.loaders import make_loader
from flexcnn.data.sources import Target
from flexcnn.engine import evaluate
from flexcnn.errors import CheckpointError, DataError
from flexcnn.hardware import resolve_hardware
from flexcnn.metrics import classification_report
from flexcnn.models import InputSpec, build_model
from flexcnn.overrides import apply_override
from flexcnn.pipeline import batch_transform


def load_model(checkpoint: Path | str, device: torch.device) -> tuple[torch.nn.Module, RunConfig, Checkpoint]:
    """Rebuild the model saved in ``checkpoint`` and load its weights."""
    saved = Checkpoint.load(checkpoint, device)
    config = validate_config(saved.config, source=f"{checkpoint} (saved config)")
    spec = InputSpec(saved.input.channels, saved.input.image_size, len(saved.classes))
    if hasattr(config.model, "weights"):
        config.model.weights = "none"  # the checkpoint carries the trained weights
    module = build_model(config.model, spec).module
    try:
        module.load_state_dict(saved.model)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint} does not match its model config: {str(exc).splitlines()[0]}") from None
    return module.to(device).eval(), config, saved


def evaluate_checkpoint(checkpoint: Path | str, overrides: list[str], split: str = "test") -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` of its data (or data given by overrides)."""
    module, config, saved = load_model(checkpoint, torch.device("cpu"))
    tree = config.to_dict()
    for override in overrides:
        apply_override(tree, override)
    config = validate_config(tree)
    # The run's precision and layout settings (so the metrics match its summary), on this machine's device.
    hw = resolve_hardware(config.train.model_copy(update={"device": "auto"}))
    module = module.to(hw.device)
    if hw.channels_last:
        module = module.to(memory_format=torch.channels_last)
    splits = load_splits(config.data, Target(saved.input.channels, saved.input.image_size))
    if splits.classes != saved.classes:
        raise DataError(f"the data's classes {splits.classes[:10]} differ from the checkpoint's {saved.classes[:10]}")
    data = splits.test if split == "test" and splits.test is not None else splits.val
    # The data given may come in another size or channel count than the run's: convert from what it is.
    info = replace(saved.input, source_channels=splits.channels, source_size=splits.image_size)
    transform = batch_transform(info, hw.device, channels_last=hw.channels_last)
    loader = make_loader(data, batch_size=256, device=hw.device, train=False, resident=True)
    out = evaluate(
        module,
        loader,
        lambda x: transform(x, train=False),
        torch.nn.CrossEntropyLoss(),
        device=hw.device,
        amp_dtype=hw.amp_dtype,
    )
    report = classification_report(out.probs, out.targets, out.loss, splits.classes)
    name = "test" if data is splits.test else "val"
    return {**report.scalars(name), "images": len(data)}
