"""Model contracts, parametrised over every registered model kind."""

from __future__ import annotations

import pytest
import torch

from flexcnn.config import load_config
from flexcnn.data.augment import BatchTransform
from flexcnn.errors import ConfigError
from flexcnn.models import InputSpec, available_models, build_model, input_request
from flexcnn.models.flexible_cnn import FlexibleCNN


def _kinds() -> list[str]:
    # Prefix entries ("torchvision:<name>") are exercised with a small member.
    return [k.replace("<name>", "resnet18") for k in available_models()]


def _model_overrides(kind: str) -> list[str]:
    if kind == "flexible_cnn":
        return ["model.num_filters=[8,16,32]", "model.dense_units=[16]"]
    # Pretrained kinds: random init (no download here) and a small input keeps CPU tests fast.
    return [f"model.kind={kind}", "model.weights=none", "model.image_size=32", "model.strategy=full"]


@pytest.mark.parametrize("kind", _kinds())
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [20, 36])
def test_every_model_trains_on_1_and_3_channels_at_two_sizes(kind: str, channels: int, size: int) -> None:
    cfg = load_config(None, _model_overrides(kind))
    request = input_request(cfg.model)
    spec = InputSpec(request.channels or channels, request.image_size or size, num_classes=5)
    adapter = build_model(cfg.model, spec)
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


def test_unknown_model_lists_the_available_ones() -> None:
    from flexcnn.models.registry import _entry

    with pytest.raises(ConfigError, match=r"available: .*flexible_cnn"):
        _entry("resnet51")


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "mish", "leaky_relu", "elu"])
def test_activation_is_used(activation: str) -> None:
    cfg = load_config(None, [f"model.activation={activation}", "model.num_filters=[4]"])
    module = FlexibleCNN(cfg.model, InputSpec(1, 8, 3))
    names = {type(m).__name__.lower() for m in module.modules()}
    assert activation.replace("_", "") in names


def test_residual_uses_identity_or_projection() -> None:
    cfg = load_config(None, ["model.residual=true", "model.num_filters=[8,8,16]", "model.batch_norm=false"])
    module = FlexibleCNN(cfg.model, InputSpec(3, 16, 4))
    shortcuts = [block.shortcut for block in module.features]
    assert isinstance(shortcuts[0], torch.nn.Sequential)  # 3 -> 8 channels: 1x1 projection
    assert isinstance(shortcuts[1], torch.nn.Identity)  # 8 -> 8: identity
    assert isinstance(shortcuts[2], torch.nn.Sequential)  # 8 -> 16
    assert module(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_batch_norm_and_dropout_switches() -> None:
    on = FlexibleCNN(
        load_config(None, ["model.conv_dropout=0.3", "model.dense_dropout=0.5", "model.num_filters=[4,4]"]).model,
        InputSpec(1, 8, 3),
    )
    off = FlexibleCNN(
        load_config(None, ["model.batch_norm=false", "model.num_filters=[4,4]"]).model, InputSpec(1, 8, 3)
    )
    kinds_on = {type(m) for m in on.modules()}
    kinds_off = {type(m) for m in off.modules()}
    assert {torch.nn.BatchNorm2d, torch.nn.Dropout2d, torch.nn.Dropout} <= kinds_on
    assert not {torch.nn.BatchNorm2d, torch.nn.Dropout2d, torch.nn.Dropout} & kinds_off


def test_flatten_head_and_per_block_kernels() -> None:
    cfg = load_config(
        None,
        [
            "model.head=flatten",
            "model.num_filters=[4,8]",
            "model.kernel_size=[5,3]",
            "model.pool=avg",
            "model.dense_units=[10,6]",
        ],
    )
    module = FlexibleCNN(cfg.model, InputSpec(3, 28, 7))
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3)]
    assert module.feature_size == 7  # 28 -> 14 -> 7
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 8 * 7 * 7
    assert [m.out_features for m in linears] == [10, 6, 7]


def test_deep_network_on_tiny_images_stops_pooling() -> None:
    cfg = load_config(None, ["model.num_blocks=6", "model.base_filters=4", "model.filter_organization=same"])
    module = FlexibleCNN(cfg.model, InputSpec(1, 8, 10))
    assert module.feature_size == 1
    assert module(torch.randn(2, 1, 8, 8)).shape == (2, 10)
