"""Evaluate a saved checkpoint on its own data split or on other data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flexcnn.checkpoint import load_checkpoint
from flexcnn.config import RunConfig, validate_config
from flexcnn.data import load_splits
from flexcnn.data.augment import BatchTransform
from flexcnn.data.loaders import make_loader
from flexcnn.data.sources import Target
from flexcnn.engine import evaluate
from flexcnn.errors import CheckpointError, DataError
from flexcnn.hardware import resolve_hardware
from flexcnn.metrics import classification_report
from flexcnn.models import InputSpec, build_model
from flexcnn.overrides import apply_override


def load_model(checkpoint: Path | str, device: torch.device) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """Rebuild the model saved in ``checkpoint`` and load its weights."""
    state = load_checkpoint(checkpoint, device)
    config = validate_config(state["config"], source=f"{checkpoint} (saved config)")
    spec = InputSpec(state["input"]["channels"], state["input"]["image_size"], len(state["classes"]))
    if hasattr(config.model, "weights"):
        config.model.weights = "none"  # the checkpoint carries the trained weights
    module = build_model(config.model, spec).module
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint} does not match its model config: {str(exc).splitlines()[0]}") from None
    return module.to(device).eval(), config, state


def evaluate_checkpoint(checkpoint: Path | str, overrides: list[str], split: str = "test") -> dict[str, Any]:
    """Metrics of a checkpoint on ``split`` of its data (or data given by overrides)."""
    module, config, state = load_model(checkpoint, torch.device("cpu"))
    tree = config.to_dict()
    for override in overrides:
        apply_override(tree, override)
    config = validate_config(tree)
    # The run's precision and layout settings (so the metrics match its summary), on this machine's device.
    hw = resolve_hardware(config.train.model_copy(update={"device": "auto"}))
    module = module.to(hw.device)
    if hw.channels_last:
        module = module.to(memory_format=torch.channels_last)
    info = state["input"]
    splits = load_splits(config.data, Target(info["channels"], info["image_size"]))
    if splits.classes != state["classes"]:
        raise DataError(
            f"the data's classes {splits.classes[:10]} differ from the checkpoint's {state['classes'][:10]}"
        )
    data = splits.test if split == "test" and splits.test is not None else splits.val
    transform = BatchTransform(
        in_channels=splits.channels,
        out_channels=info["channels"],
        in_size=splits.image_size,
        out_size=info["image_size"],
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        channels_last=hw.channels_last,
        device=hw.device,
    )
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
