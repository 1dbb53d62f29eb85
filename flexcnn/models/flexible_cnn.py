"""FlexibleCNN: conv blocks with every knob a course assignment or a sweep asks for.

Block i: ``convs_per_block`` x (conv -> [batch norm] -> activation), an optional
residual shortcut around those convs (identity, or a 1x1 projection when the
width changes), then pooling and 2-D dropout. The head is global average
pooling or flatten, dense layers, and the classifier.
"""

from __future__ import annotations

from torch import Tensor, nn

from flexcnn.config import FlexibleCNNConfig
from flexcnn.models.registry import InputSpec, ModelAdapter, register

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class ConvBlock(nn.Module):
    """Convs, optional residual shortcut, pooling and dropout."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        convs: int,
        activation: str,
        batch_norm: bool,
        residual: bool,
        pool: nn.Module,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            # "same" padding keeps the spatial size, so the shortcut can be added.
            layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            if not (residual and i == convs - 1):
                layers.append(make_activation(activation))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (
                nn.Identity()
                if in_ch == out_ch
                else nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, bias=not batch_norm),
                    nn.BatchNorm2d(out_ch) if batch_norm else nn.Identity(),
                )
            )
            self.post = make_activation(activation)
        self.pool = pool
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = self.post(out + self.shortcut(x))
        return self.dropout(self.pool(out))


class FlexibleCNN(nn.Module):
    """A CNN whose depth, widths, kernels, activation, norm, dropout and skips are config."""

    def __init__(self, cfg: FlexibleCNNConfig, spec: InputSpec) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        size, in_ch = spec.image_size, spec.channels
        stride = cfg.pool_stride or cfg.pool_kernel
        for out_ch, kernel in zip(cfg.filters(), cfg.kernel_sizes(), strict=True):
            pool: nn.Module = nn.Identity()
            # Any input size works: pooling stops once the map is smaller than its window.
            if cfg.pool != "none" and size >= cfg.pool_kernel and size > 1:
                pool_cls = nn.MaxPool2d if cfg.pool == "max" else nn.AvgPool2d
                pool = pool_cls(cfg.pool_kernel, stride)
                size = (size - cfg.pool_kernel) // stride + 1
            blocks.append(
                ConvBlock(
                    in_ch,
                    out_ch,
                    kernel=kernel,
                    convs=cfg.convs_per_block,
                    activation=cfg.activation,
                    batch_norm=cfg.batch_norm,
                    residual=cfg.residual,
                    pool=pool,
                    dropout=cfg.conv_dropout,
                )
            )
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        if cfg.head == "gap":
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            width = in_ch
        else:
            self.pool = nn.Flatten()
            width = in_ch * size * size
        dense: list[nn.Module] = []
        for units in cfg.dense_units:
            dense += [nn.Linear(width, units), make_activation(cfg.activation)]
            if cfg.dense_dropout > 0:
                dense.append(nn.Dropout(cfg.dense_dropout))
            width = units
        dense.append(nn.Linear(width, spec.num_classes))
        self.classifier = nn.Sequential(*dense)
        self.feature_size = size

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))


@register("flexible_cnn", description="configurable CNN trained from scratch")
def build_flexible_cnn(cfg: FlexibleCNNConfig, spec: InputSpec) -> ModelAdapter:
    return ModelAdapter(FlexibleCNN(cfg, spec), spec)
