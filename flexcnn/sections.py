"""The config sections that models, data, hardware, losses and optimisers read.

This module sits at the bottom of the import graph: it imports nothing from
flexcnn, so every room may read its own section without importing
``flexcnn.config``, which sits above models and data and assembles the whole
``RunConfig`` from their registries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where images come from, how they are split, normalised and augmented.

    ``source`` is checked against the registered data sources by ``flexcnn.config``.
    """

    source: str = "digits"
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
    def _consistent(self) -> DataConfig:
        self.check_consistent()
        return self

    def check_consistent(self) -> None:
        """Raise ValueError when fields contradict each other (subclasses add their own checks first)."""
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both data.mean and data.std, or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("data.mean and data.std must have the same length")


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
        """Whether a better monitored value is larger (accuracy, F1) or smaller (loss)."""
        return "min" if self.monitor.endswith("loss") else "max"


WandbMode = Literal["auto", "online", "offline", "disabled"]
WANDB_MODES: tuple[str, ...] = get_args(WandbMode)  # the CLI's --wandb-mode choices


class WandbConfig(Section):
    """Weights & Biases logging; mode auto is online when logged in, else offline."""

    mode: WandbMode = "disabled"
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
