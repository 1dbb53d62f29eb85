"""Models built by name: ``register`` a builder, ``build_model`` from a config.

A builder returns a ``ModelAdapter``: the ``nn.Module`` plus what the trainer
must know about it (the input it wants, its parameter groups, and whether its
trainable set changes at some epoch, as two-phase fine-tuning does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flexcnn.errors import ConfigError


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
        total = sum(p.numel() for p in self.module.parameters())
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        return {"params/total": total, "params/trainable": trainable}


Builder = Callable[[Any, InputSpec], ModelAdapter]
Requester = Callable[[Any], InputRequest]


@dataclass(frozen=True)
class _Entry:
    build: Builder
    request: Requester
    description: str


_REGISTRY: dict[str, _Entry] = {}
_PREFIXES: dict[str, _Entry] = {}


def register(
    name: str, *, description: str, request: Requester | None = None, prefix: bool = False
) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (or every ``name<suffix>`` when prefix=True)."""

    def wrap(builder: Builder) -> Builder:
        entry = _Entry(builder, request or (lambda _cfg: InputRequest()), description)
        (_PREFIXES if prefix else _REGISTRY)[name] = entry
        return builder

    return wrap


def _entry(kind: str) -> _Entry:
    _load_builtin_models()
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    for prefix, entry in _PREFIXES.items():
        if kind.startswith(prefix):
            return entry
    known = ", ".join([*sorted(_REGISTRY), *(f"{p}<name>" for p in sorted(_PREFIXES))])
    raise ConfigError(f"model.kind: unknown model {kind!r}; available: {known}")


def input_request(config: Any) -> InputRequest:
    """What the configured model asks of its inputs."""
    return _entry(config.kind).request(config)


def build_model(config: Any, spec: InputSpec) -> ModelAdapter:
    """Build the model named by ``config.kind`` for inputs described by ``spec``."""
    return _entry(config.kind).build(config, spec)


def available_models() -> dict[str, str]:
    """Registered names (prefix entries end with ``<name>``) and their descriptions."""
    _load_builtin_models()
    names = {name: e.description for name, e in _REGISTRY.items()}
    names.update({f"{p}<name>": e.description for p, e in _PREFIXES.items()})
    return dict(sorted(names.items()))


def _load_builtin_models() -> None:
    # Import for the side effect of registration; lazily, so importing the
    # registry never pulls torchvision's model zoo.
    from flexcnn.models import (
        flexible_cnn,  # noqa: F401
        pretrained,  # noqa: F401
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_batch(spec: InputSpec, batch: int = 2) -> torch.Tensor:
    """A random float batch of the spec's shape (for tests and shape checks)."""
    return torch.randn(batch, spec.channels, spec.image_size, spec.image_size)
