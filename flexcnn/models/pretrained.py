"""Pretrained torchvision classifiers with a new head, fine-tuned by one of four strategies.

``resnet50``, ``vgg19`` and ``torchvision:<name>`` (any classifier that
``torchvision.models.list_models`` lists) are built the same way:

1. the torchvision architecture, built without weights (so torchvision never
   unpickles a file itself: every state dict goes through ``torch.load(...,
   weights_only=True)`` in ``weights``);
2. its final classification layer replaced by a new head for ``num_classes``
   (optional hidden layer and dropout; ``backbone``);
3. the backbone's weights loaded from torchvision's ImageNet file (cached under
   ``TORCH_HOME``), from a local state dict, or left random (``weights``);
4. the backbone split into *stages* in the model's own units (``backbone``).
   Unfreezing the last K stages makes everything from the start of the
   K-th-from-last stage to the output trainable, so layers that sit above the
   last stage (VGG's fc6/fc7, ConvNeXt's final norm) train with it (``finetune``).

Frozen layers are kept in eval mode while training, so the running statistics
of their batch-norm layers do not move and their dropout is off.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from flexcnn.errors import ConfigError
from flexcnn.imagenet import IMAGENET_MEAN, IMAGENET_STD
from flexcnn.models.backbone import attach_head, backbone_stages
from flexcnn.models.finetune import PretrainedAdapter
from flexcnn.models.registry import InputRequest, InputSpec, ModelSection, register
from flexcnn.models.weights import ensure_weights, imagenet_state_dict, load_backbone, local_state_dict
from flexcnn.models.zoo import PREFIX, arch_kwargs, default_weights, fixed_input_size, torchvision_name
from flexcnn.sections import Probability

log = logging.getLogger(__name__)

# Below this size a conv net may pool its feature map away; check with one forward pass at build time.
_CHECK_SIZE_BELOW = 64


class PretrainedConfig(ModelSection):
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


def request_input(cfg: PretrainedConfig) -> InputRequest:
    """3-channel images at ``model.image_size``, normalised as the weights expect."""
    name = torchvision_name(cfg.kind)
    fixed = fixed_input_size(name)
    if fixed is not None and cfg.image_size != fixed:
        raise ConfigError(
            f"model.image_size={cfg.image_size}: {name} takes {fixed}x{fixed} images only; set model.image_size={fixed}"
        )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if cfg.weights.lower() == "imagenet":
        preset = default_weights(name).transforms()
        mean, std = tuple(preset.mean), tuple(preset.std)
        trained_at = int(preset.crop_size[0])
        if trained_at != cfg.image_size:
            log.info(
                "%s's ImageNet weights were trained at %d px; model.image_size=%d", name, trained_at, cfg.image_size
            )
    ensure_weights(name, cfg.weights)
    return InputRequest(channels=3, image_size=cfg.image_size, mean=mean, std=std)


def build_pretrained(cfg: PretrainedConfig, spec: InputSpec) -> PretrainedAdapter:
    """The configured torchvision classifier with a new head, weights loaded, strategy applied."""
    from torchvision.models import get_model

    name = torchvision_name(cfg.kind)
    if spec.channels != 3:
        raise ConfigError(
            f"data.channels={spec.channels}, but {name} takes 3-channel images; leave data.channels unset "
            "(grayscale images are repeated over 3 channels)"
        )
    source = cfg.weights.lower() if cfg.weights.lower() in ("imagenet", "none") else cfg.weights
    model = get_model(name, weights=None, **arch_kwargs(name, random_init=source == "none"))
    head_path, head = attach_head(model, spec.num_classes, cfg.head_hidden, cfg.head_dropout)
    if source != "none":
        state, where = imagenet_state_dict(name) if source == "imagenet" else local_state_dict(source)
        load_backbone(model, state, head_path, where, name)
    if spec.image_size < _CHECK_SIZE_BELOW:
        _check_input_size(model, name, spec)
    adapter = PretrainedAdapter(
        model,
        spec,
        name=name,
        head=head,
        stages=backbone_stages(model, head_path),
        strategy=cfg.strategy,
        unfreeze_stages=cfg.unfreeze_stages,
        head_epochs=cfg.head_epochs,
        backbone_lr_mult=cfg.backbone_lr_mult,
    )
    log.info("%s", adapter.describe())
    return adapter


def _check_input_size(model: nn.Module, name: str, spec: InputSpec) -> None:
    """Fail at build time, not at epoch 0, when the images are too small for the network."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, spec.channels, spec.image_size, spec.image_size))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"model.image_size={spec.image_size} is too small for {name}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)


_STRATEGIES = "feature_extraction | partial | full | two_phase"
# Random init and a small input: builds offline in about a second on a CPU.
_SMALL = {"weights": "none", "image_size": 32, "strategy": "full"}

for _kind, _arch in (("resnet50", "ResNet50"), ("vgg19", "VGG19")):
    register(
        _kind,
        config=PretrainedConfig,
        description=f"{_arch}, ImageNet weights; {_STRATEGIES}",
        request=request_input,
        example=_SMALL,
    )(build_pretrained)
register(
    PREFIX,
    config=PretrainedConfig,
    prefix=True,
    description="any torchvision classifier (torchvision:resnet18, torchvision:convnext_tiny, ...); same strategies",
    request=request_input,
    example={"kind": f"{PREFIX}resnet18", **_SMALL},
)(build_pretrained)
