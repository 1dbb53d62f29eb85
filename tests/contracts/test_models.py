"""Model contract, run against every registered model kind (a new model file is picked up as it registers).

Each registration carries a small example config; built from it, every model
must validate through ``RunConfig`` into its own config class, say what input it
wants, and train one step on 1- and 3-channel images of two sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from flexcnn.config import dump_config, load_config, validate_config
from flexcnn.data.augment import BatchTransform
from flexcnn.errors import ConfigError
from flexcnn.models import InputRequest, InputSpec, available_models, build_model, input_request
from flexcnn.models.registry import ModelEntry, find_model, model_entries

ENTRIES = model_entries()


def _example(entry: ModelEntry) -> dict[str, object]:
    # Prefix entries name a member in their example ("torchvision:resnet18").
    return {"kind": entry.kind, **entry.example}


def _config(entry: ModelEntry) -> BaseModel:
    """The example as RunConfig validates it: an instance of the registered config class."""
    return validate_config({"model": _example(entry)}).model


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.label)
def test_example_config_validates_into_the_registered_class(entry: ModelEntry, tmp_path: Path) -> None:
    model = _config(entry)
    assert type(model) is entry.config
    assert find_model(model.kind) is entry
    assert entry.label in available_models()
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(validate_config({"model": _example(entry)})))
    assert load_config(path).model == model  # the resolved config reloads to the same model


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.label)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [20, 36])
def test_every_model_trains_on_1_and_3_channels_at_two_sizes(entry: ModelEntry, channels: int, size: int) -> None:
    model = _config(entry)
    request = input_request(model)
    assert isinstance(request, InputRequest)
    spec = InputSpec(request.channels or channels, request.image_size or size, num_classes=5)
    adapter = build_model(model, spec)
    transform = BatchTransform(
        in_channels=channels,
        out_channels=spec.channels,
        in_size=size,
        out_size=spec.image_size,
        mean=(0.5,) * spec.channels,
        std=(0.25,) * spec.channels,
        preset="standard",
    )
    images = torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8)
    adapter.train_mode()
    logits = adapter.module(transform(images, train=True))
    assert logits.shape == (4, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    trainable = [p for p in adapter.module.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    counts = adapter.parameter_counts()
    assert 0 < counts["params/trainable"] <= counts["params/total"]


def test_unknown_kind_fails_at_load_time_listing_every_registered_kind() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.kind=no_such_model"])
    message = str(err.value)
    assert "model.kind" in message and "no_such_model" in message
    for entry in ENTRIES:
        assert entry.label in message


def test_unknown_model_lists_the_available_ones() -> None:
    from flexcnn.models.registry import _entry

    with pytest.raises(ConfigError, match=r"available: .*flexible_cnn"):
        _entry("resnet51")
