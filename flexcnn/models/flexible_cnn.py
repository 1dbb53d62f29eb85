"""FlexibleCNN: conv blocks with every knob a course assignment or a sweep asks for.

Block i: ``convs_per_block`` x (conv -> [batch norm] -> activation), an optional
residual shortcut around those convs (identity, or a 1x1 projection when the
width changes), then pooling and 2-D dropout. The head is global average
pooling or flatten, dense layers, and the classifier.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from flexcnn.models.registry import InputSpec, ModelAdapter, ModelSection, register
from flexcnn.sections import Probability

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
# The config accepts exactly the names in the table above.
Activation = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]
Kernel = Annotated[int, Field(ge=1, le=15)]


class FlexibleCNNConfig(ModelSection):
    """A configurable CNN trained from scratch.

    Conv widths come from ``num_filters`` when given, else from ``base_filters``,
    ``num_blocks`` and ``filter_organization``.
    """

    kind: Literal["flexible_cnn"] = "flexible_cnn"
    num_filters: list[Annotated[int, Field(ge=1, le=8192)]] | None = None
    base_filters: int = Field(32, ge=1, le=8192)
    num_blocks: int = Field(5, ge=1, le=16)
    # same: 32,32,..; double: 32,64,.. (capped at max_filters); half: 512,256,..;
    # scale: geometric from base_filters to max_filters over num_blocks.
    filter_organization: Literal["same", "double", "half", "scale"] = "double"
    max_filters: int = Field(512, ge=1, le=8192)
    kernel_size: Kernel | list[Kernel] = 3
    convs_per_block: int = Field(1, ge=1, le=4)
    activation: Activation = "relu"
    batch_norm: bool = True
    conv_dropout: Probability = 0.0
    dense_dropout: Probability = 0.0
    pool: Literal["max", "avg", "none"] = "max"
    pool_kernel: int = Field(2, ge=1, le=8)
    pool_stride: int | None = Field(None, ge=1, le=8)
    residual: bool = False
    dense_units: list[Annotated[int, Field(ge=1, le=65536)]] = Field(default_factory=lambda: [128])
    head: Literal["gap", "flatten"] = "gap"

    @field_validator("dense_units", mode="before")
    @classmethod
    def _one_width_is_a_list(cls, value: Any) -> Any:
        # Sweeps often search a single dense width; accept 256 as [256].
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _kernel_list_matches_blocks(self) -> FlexibleCNNConfig:
        blocks = len(self.num_filters) if self.num_filters else self.num_blocks
        if isinstance(self.kernel_size, list) and len(self.kernel_size) != blocks:
            raise ValueError(
                f"kernel_size has {len(self.kernel_size)} entries but the network has "
                f"{blocks} conv blocks; give one kernel size or one per block"
            )
        return self

    def filters(self) -> list[int]:
        """The conv width of each block."""
        if self.num_filters:
            return list(self.num_filters)
        n, base, top = self.num_blocks, self.base_filters, self.max_filters
        if self.filter_organization == "same":
            return [base] * n
        if self.filter_organization == "double":
            return [min(base * 2**i, top) for i in range(n)]
        if self.filter_organization == "half":
            return [max(base // 2**i, 1) for i in range(n)]
        if n == 1:
            return [base]
        ratio = (top / base) ** (1 / (n - 1))
        return [max(1, round(base * ratio**i)) for i in range(n)]

    def kernel_sizes(self) -> list[int]:
        """The kernel size of each block."""
        n = len(self.filters())
        return list(self.kernel_size) if isinstance(self.kernel_size, list) else [self.kernel_size] * n


def make_activation(name: str) -> nn.Module:
    """A new activation layer by its config name."""
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
        """Convs, shortcut, pooling, dropout."""
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
        """Logits for a normalised float batch (N, C, S, S)."""
        return self.classifier(self.pool(self.features(x)))


@register(
    "flexible_cnn",
    config=FlexibleCNNConfig,
    description="configurable CNN trained from scratch",
    example={"num_filters": [8, 16, 32], "dense_units": [16]},
)
def build_flexible_cnn(cfg: FlexibleCNNConfig, spec: InputSpec) -> ModelAdapter:
    """A FlexibleCNN for ``spec``, trained from scratch."""
    return ModelAdapter(FlexibleCNN(cfg, spec), spec)
