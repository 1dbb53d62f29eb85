"""The torchvision model table: which classifiers exist, their ImageNet weights and input sizes.

Only names and metadata live here; building, weights files and fine-tuning are
in ``pretrained``, ``weights`` and ``finetune``. torchvision is imported when a
function needs it, so importing the model registry never pulls its model zoo.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from flexcnn.errors import ConfigError

PREFIX = "torchvision:"


@functools.cache
def classifier_names() -> tuple[str, ...]:
    """Every image classifier torchvision lists (detection, video, ... excluded)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def torchvision_name(kind: str) -> str:
    """The torchvision model name behind ``kind`` (``resnet50``, ``torchvision:<name>``)."""
    name = kind.removeprefix(PREFIX)
    known = classifier_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(
            f"model.kind: torchvision has no image classifier {name!r}{hint} (available: {', '.join(known)})"
        )
    return name


def default_weights(name: str) -> Any:
    """torchvision's recommended ImageNet weights enum member for ``name`` (``...Weights.DEFAULT``)."""
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def fixed_input_size(name: str) -> int | None:
    """The only image size a model accepts (ViT, MaxViT), or None for any size."""
    if name.startswith(("vit_", "maxvit")):
        return int(default_weights(name).meta["min_size"][0])
    return None


def arch_kwargs(name: str, *, random_init: bool) -> dict[str, Any]:
    """Builder arguments that make the architecture the ImageNet weights were trained on.

    The same arguments are used whatever the weights' source, so a checkpoint
    trained from ImageNet weights reloads into a model built with ``weights: none``.
    """
    if name.startswith("vit_"):
        return {"image_size": fixed_input_size(name)}
    if name.startswith("maxvit"):
        return {"input_size": tuple(default_weights(name).meta["min_size"])}
    if name in ("googlenet", "inception_v3"):
        # The ImageNet weights expect transform_input=True; the auxiliary heads
        # only add a second loss term that our loop does not use.
        return {"transform_input": True, "aux_logits": False, "init_weights": random_init}
    return {}
