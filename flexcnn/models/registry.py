"""Models built by kind: each model file ``register``s itself; ``build_model`` builds from a config.

The registry imports no model (the way timm's ``_registry`` does): a model file
imports this module and registers its kinds, and ``flexcnn/models/__init__.py``
imports the model files. A registration names the kind (or a prefix such as
``torchvision:``), the model's config class, its builder, what it asks of its
inputs, a description, and a small example config for tests.

A builder returns a ``ModelAdapter``: the ``nn.Module`` plus what the trainer
must know about it (the input it wants, its parameter groups, and whether its
trainable set changes at some epoch, as two-phase fine-tuning does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, field_validator
from torch import nn

from flexcnn.errors import ConfigError
from flexcnn.sections import Section


@dataclass(frozen=True)
class InputSpec:
    """The images the data pipeline feeds the model."""

    channels: int
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class InputRequest:
    """What a model asks of its inputs; None means "whatever the data has"."""

    channels: int | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class ModelAdapter:
    """An ``nn.Module`` with the hooks the training loop calls.

    The defaults suit a model trained from scratch: every parameter at the base
    learning rate, one phase.
    """

    # The epoch (0-based) at which the trainable set changes and the optimiser is rebuilt
    # (two-phase fine-tuning); None: one phase. run() sizes schedules and warns by it.
    phase_switch_epoch: int | None = None

    def __init__(self, module: nn.Module, spec: InputSpec) -> None:
        self.module = module
        self.spec = spec

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups for the currently trainable parameters."""
        return [{"params": [p for p in self.module.parameters() if p.requires_grad], "lr": lr}]

    def on_epoch_start(self, epoch: int) -> bool:
        """Called before each epoch (0-based); True when the trainable set changed."""
        return False

    def train_mode(self) -> None:
        """Put the module in training mode (subclasses keep frozen parts in eval)."""
        self.module.train()

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts, under the keys the run logs."""
        total = sum(p.numel() for p in self.module.parameters())
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        return {"params/total": total, "params/trainable": trainable}


Builder = Callable[[Any, InputSpec], ModelAdapter]
Requester = Callable[[Any], InputRequest]


def _no_request(_config: Any) -> InputRequest:
    return InputRequest()


@dataclass(frozen=True)
class ModelEntry:
    """One registration: a kind (or a ``prefix`` of kinds) and how to configure and build it."""

    kind: str
    config: type[BaseModel]
    build: Builder
    description: str
    request: Requester = _no_request
    prefix: bool = False
    # Config fields for a small instance that builds offline in a second on a CPU
    # (no downloads): the contract tests build every registered model from it.
    example: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The kind as users write it: ``flexible_cnn``, or ``torchvision:<name>`` for a prefix."""
        return f"{self.kind}<name>" if self.prefix else self.kind

    def matches(self, kind: str) -> bool:
        """Whether this entry builds ``kind`` (a prefix entry needs a name after the prefix)."""
        if self.prefix:
            return kind.startswith(self.kind) and len(kind) > len(self.kind)
        return kind == self.kind


_ENTRIES: dict[str, ModelEntry] = {}


def register(
    kind: str,
    *,
    config: type[BaseModel],
    description: str,
    request: Requester | None = None,
    prefix: bool = False,
    example: Mapping[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Register a builder for ``kind`` (or every ``kind<name>`` when prefix=True) and its config class."""

    def wrap(builder: Builder) -> Builder:
        if kind in _ENTRIES:
            raise ValueError(f"model kind {kind!r} is registered twice")
        tags = {config_tag(e.config): e.config for e in _ENTRIES.values()}
        if tags.get(config_tag(config), config) is not config:
            raise ValueError(f"two model config classes share the tag {config_tag(config)!r}")
        _ENTRIES[kind] = ModelEntry(
            kind, config, builder, description, request or _no_request, prefix, dict(example or {})
        )
        return builder

    return wrap


def config_tag(config: type[BaseModel]) -> str:
    """The tag of a config class in ``RunConfig.model``'s union: the name of the model file defining it.

    Each model file defines one config class, so the tag is unique, and error
    locations read ``model.pretrained.kind`` rather than a class name.
    """
    return config.__module__.rpartition(".")[2]


def model_entries() -> list[ModelEntry]:
    """Every registration, in registration order (kinds before prefixes)."""
    entries = list(_ENTRIES.values())
    return [e for e in entries if not e.prefix] + [e for e in entries if e.prefix]


def find_model(kind: object) -> ModelEntry | None:
    """The entry that builds ``kind``, or None."""
    if not isinstance(kind, str):
        return None
    exact = _ENTRIES.get(kind)
    if exact is not None and not exact.prefix:
        return exact
    return next((e for e in model_entries() if e.prefix and e.matches(kind)), None)


def known_kinds(*, quote_prefixes: bool = False) -> str:
    """``flexible_cnn, resnet50, vgg19 or torchvision:<name>``: the kinds, for messages."""
    labels = [repr(e.label) if e.prefix and quote_prefixes else e.label for e in model_entries()]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def unknown_kind(kind: str) -> str:
    """The message for a kind no model registered."""
    return f"unknown model kind {kind!r}; expected {known_kinds(quote_prefixes=True)}"


def _entry(kind: str) -> ModelEntry:
    entry = find_model(kind)
    if entry is None:
        labels = sorted(e.label for e in _ENTRIES.values() if not e.prefix)
        known = ", ".join([*labels, *sorted(e.label for e in _ENTRIES.values() if e.prefix)])
        raise ConfigError(f"model.kind: unknown model {kind!r}; available: {known}")
    return entry


def input_request(config: Any) -> InputRequest:
    """What the configured model asks of its inputs."""
    return _entry(config.kind).request(config)


def build_model(config: Any, spec: InputSpec) -> ModelAdapter:
    """Build the model named by ``config.kind`` for inputs described by ``spec``."""
    return _entry(config.kind).build(config, spec)


def available_models() -> dict[str, str]:
    """Registered kinds (prefix entries end with ``<name>``) and their descriptions, sorted."""
    return dict(sorted((e.label, e.description) for e in _ENTRIES.values()))


class ModelSection(Section):
    """Base for a model's config class: ``kind`` must be one this class was registered for.

    A subclass may narrow ``kind`` (``Literal["flexible_cnn"]``) or keep it a
    string that the registry checks, as kinds behind a prefix need.
    """

    kind: str

    @field_validator("kind")
    @classmethod
    def _registered_for_this_class(cls, value: str) -> str:
        entry = find_model(value)
        if entry is None or entry.config is not cls:
            raise ValueError(unknown_kind(value))
        return value
