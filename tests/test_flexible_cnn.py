"""FlexibleCNN: its knobs (activation, residual, norm, dropout, head, kernels, pooling) do what they say.

What every model must do is in tests/contracts/test_models.py.
"""

from __future__ import annotations

import pytest
import torch

from flexcnn.config import load_config
from flexcnn.models import InputSpec
from flexcnn.models.flexible_cnn import FlexibleCNN


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
