"""The run configuration: one validated pydantic tree, loaded from YAML plus overrides.

Every field is checked at load time (``extra="forbid"``, literals, bounds), so a
typo fails before any data is read, with the field's dotted path and the values
that were expected.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flexcnn.errors import ConfigError
from flexcnn.overrides import apply_override, walk_schema

Activation = Literal["relu", "gelu", "silu", "mish", "leaky_relu", "elu"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FlexibleCNNConfig(Section):
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
    kernel_size: Annotated[int, Field(ge=1, le=15)] | list[Annotated[int, Field(ge=1, le=15)]] = 3
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


PRETRAINED_KINDS = ("resnet50", "vgg19")


class PretrainedConfig(Section):
    """A torchvision classifier with a new head, fine-tuned by one of four strategies.

    ``kind`` is ``resnet50``, ``vgg19`` or ``torchvision:<name>`` for any
    classifier torchvision lists.
    """

    kind: str
    # imagenet: torchvision's weight enum (cached under TORCH_HOME); none: random
    # init; anything else: a path to a local state dict (air-gapped clusters).
    weights: str = "imagenet"
    strategy: Literal["feature_extraction", "partial", "full", "two_phase"] = "feature_extraction"
    # Stages counted in the model's own units: ResNet layer4, layer3, ...; VGG conv blocks.
    unfreeze_stages: int = Field(1, ge=0, le=16)
    head_epochs: int = Field(1, ge=0, le=10000)
    backbone_lr_mult: float = Field(0.1, gt=0.0, le=10.0)
    head_hidden: int | None = Field(None, ge=1, le=65536)
    head_dropout: Probability = 0.0
    image_size: int = Field(224, ge=16, le=1024)

    @field_validator("kind")
    @classmethod
    def _known_prefix(cls, value: str) -> str:
        if value in PRETRAINED_KINDS or (value.startswith("torchvision:") and len(value) > 12):
            return value
        raise ValueError(
            f"unknown model kind {value!r}; expected flexible_cnn, {', '.join(PRETRAINED_KINDS)} "
            "or 'torchvision:<name>'"
        )


def _model_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "flexible_cnn")
    else:
        kind = getattr(value, "kind", None)
        if kind is None:
            return None  # not a mapping: pydantic reports the section's expected shape
    return "flexible_cnn" if kind == "flexible_cnn" else "pretrained"


ModelConfig = Annotated[
    Annotated[FlexibleCNNConfig, Tag("flexible_cnn")] | Annotated[PretrainedConfig, Tag("pretrained")],
    Discriminator(_model_tag),
]

TORCHVISION_SOURCES = ("cifar10", "cifar100", "mnist", "fashionmnist", "svhn", "fer2013")
DataSource = Literal[
    "digits",
    "mnist5k",
    "imagefolder",
    "fer2013_csv",
    "cifar10",
    "cifar100",
    "mnist",
    "fashionmnist",
    "svhn",
    "fer2013",
]


class DataConfig(Section):
    """Where images come from, how they are split, normalised and augmented."""

    source: DataSource = "digits"
    # imagefolder: folder with train/ (and optional val/, test/); fer2013_csv: the CSV
    # file; torchvision sets: their download/cache folder (default ~/.cache/flexcnn/data).
    root: Path | None = None
    download: bool = True
    val_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    split_seed: int = 0
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int | None = Field(None, ge=1, le=65536)
    augment: Literal["none", "light", "standard", "strong"] = "standard"
    hflip: bool = True  # off for digits and text, where a mirror image is another class
    image_size: int | None = Field(None, ge=4, le=2048)
    channels: Literal[1, 3] | None = None
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    mean: list[float] | None = None
    std: list[Annotated[float, Field(gt=0.0)]] | None = None
    class_weighting: Literal["none", "loss", "sampler"] = "none"
    # auto: keep uint8 images on the device when they fit under resident_max_mb.
    resident: Literal["auto", "always", "never"] = "auto"
    resident_max_mb: int = Field(2048, ge=1)
    num_workers: int | Literal["auto"] = "auto"
    cache_dir: Path | None = None  # decoded-image cache for streamed image folders
    skip_corrupt: bool = False
    limit: int | None = Field(None, ge=1)  # cap on training images, for quick checks

    @model_validator(mode="after")
    def _root_where_needed(self) -> DataConfig:
        if self.source in ("imagefolder", "fer2013_csv") and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("data.mean and data.std must have the same length")
        return self


class OptimConfig(Section):
    """Optimiser, learning-rate schedule and regularisation."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    scheduler: Literal["none", "step", "cosine", "onecycle", "plateau"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    plateau_patience: int = Field(2, ge=0)
    min_lr: float = Field(0.0, ge=0.0)


Monitor = Literal["val/acc", "val/loss", "val/f1_macro"]


class TrainConfig(Section):
    """The training loop: length, seed, loss, early stopping and hardware options."""

    epochs: int = Field(15, ge=1, le=100000)
    seed: int = 0
    monitor: Monitor = "val/acc"
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs; None = off
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    label_smoothing: Probability = 0.0
    grad_clip: float | None = Field(None, gt=0.0)
    device: str = "auto"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    cudnn_benchmark: bool = True
    threads: int | None = Field(None, ge=1)  # CPU threads; set per worker to avoid oversubscription

    @field_validator("channels_last", "compile", mode="before")
    @classmethod
    def _yaml_on_off_is_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML 1.1 (PyYAML's safe_load) reads a bare on/off as true/false.
        if not isinstance(value, bool):
            return value
        if info.field_name == "compile":
            return "default" if value else "off"
        return "on" if value else "off"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        head = value.split(":", 1)[0]
        if head not in ("auto", "cpu", "cuda", "mps") or (":" in value and head != "cuda"):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        return value

    @property
    def monitor_mode(self) -> Literal["max", "min"]:
        return "min" if self.monitor.endswith("loss") else "max"


class WandbConfig(Section):
    """Weights & Biases logging; mode auto is online when logged in, else offline."""

    mode: Literal["auto", "online", "offline", "disabled"] = "disabled"
    project: str | None = None
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    name: str | None = None
    num_samples: int = Field(32, ge=0, le=1024)  # images in the sample-predictions table
    log_model: bool = True


class LoggingConfig(Section):
    """Where the run folder goes and what is reported."""

    output_dir: Path = Path("runs")
    run_name: str | None = None
    progress: bool = True
    wandb: WandbConfig = Field(default_factory=WandbConfig)


class RunConfig(Section):
    """Everything one training run needs."""

    model: ModelConfig = Field(default_factory=FlexibleCNNConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data (paths as strings)."""
        return json.loads(self.model_dump_json())


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path, what: str = "config file") -> Any:
    """Read a YAML file with the safe loader, turning I/O and syntax errors into ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None


def load_config(
    path: Path | str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Load a RunConfig from an optional YAML file, a base dict and dotted overrides."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        loaded = read_yaml(Path(path))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = deep_merge(tree, loaded)
    for assignment in overrides:
        apply_override(tree, assignment)
    return validate_config(tree, source=str(path) if path else "config")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``; nested dicts merge, other values replace."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate_config(tree: Any, source: str = "config") -> RunConfig:
    """Validate a plain dict as a RunConfig, raising ConfigError with readable messages."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the dotted field, what was wrong, and what was expected."""
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for err in exc.errors(include_url=False):
        field = error_field(err)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"].startswith("union_tag"):
            message = "expected a mapping with a kind (flexible_cnn, resnet50, vgg19 or torchvision:<name>)"
            message += f" (got {err.get('input')!r})"
        elif err["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(exc, err["loc"])
        elif ("input" in err and not isinstance(err["input"], dict | list)) or err["type"] == "literal_error":
            message += f" (got {err['input']!r})"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def error_field(err: Mapping[str, Any]) -> str:
    """The dotted config field of one pydantic error (``model.num_filters.0``), without union tags."""
    return ".".join(str(p) for p in err["loc"] if p not in ("flexible_cnn", "pretrained")) or "(top level)"


def _suggestion(exc: ValidationError, loc: tuple[Any, ...]) -> str:
    section = walk_schema(RunConfig, loc[:-1], union_tags=True)
    if not section.complete or not section.models:
        return ""
    known = section.known()
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint}; expected one of: {', '.join(known)}"


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
