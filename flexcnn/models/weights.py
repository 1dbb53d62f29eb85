"""Backbone weights: torchvision's ImageNet files in the torch.hub cache, or a local state dict.

Every file goes through ``safe_torch_load`` (``weights_only=True``): torchvision
never unpickles a file itself, because models are built without weights and
loaded here. ImageNet files are downloaded when missing; offline, the error says
which file to copy where.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from flexcnn.checkpoint import safe_torch_load
from flexcnn.errors import CheckpointError, UserError
from flexcnn.models.zoo import default_weights

log = logging.getLogger(__name__)

# Auxiliary classifiers of GoogLeNet / Inception v3: built off, their keys in a state dict ignored.
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# Old DenseNet files name layers 'norm.1' where the module is now 'norm1' (as torchvision remaps).
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class WeightsUnavailable(UserError):
    """ImageNet weights are neither cached nor downloadable (offline, air-gapped)."""


def weights_file(name: str) -> Path:
    """Where torch.hub caches ``name``'s ImageNet weights: ``<hub dir>/checkpoints/<file>``."""
    url = default_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def ensure_weights(name: str, weights: str) -> None:
    """Fail before any data is read when the weights cannot be had.

    Downloads ImageNet weights that are not cached yet; checks that a local state dict exists.
    """
    source = weights.lower()
    if source == "imagenet":
        if not weights_file(name).is_file():
            _download(name)
    elif source != "none":
        _local_path(weights)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, loaded with ``weights_only=True``.

    Accepts a plain state dict, a flexcnn checkpoint (its ``model``) or a dict
    with a ``state_dict`` entry; strips the ``module.`` prefix DataParallel adds.
    """
    # "model.weights: file" so the message names the config field the path came from.
    obj = safe_torch_load(path, what="model.weights: file")
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(
            f"model.weights: {path} does not hold a state dict (a mapping of parameter names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def imagenet_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's ImageNet weights for ``name`` from the torch.hub cache, downloading them if missing."""
    path = weights_file(name)
    if not path.is_file():
        _download(name)
    return read_state_dict(path), f"{name}'s ImageNet weights ({path})"


def _download(name: str) -> None:
    weights, path = default_weights(name), weights_file(name)
    url, enum = weights.url, f"{type(weights).__name__}.{weights.name}"
    log.info("downloading %s to %s", url, path)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
    # URLError and socket errors are OSErrors; a RuntimeError is a hash mismatch.
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        raise WeightsUnavailable(
            f"model.weights=imagenet: {name}'s ImageNet weights ({enum}) are not cached and could not be "
            f"downloaded ({exc}). Expected file {path.name} in the cache folder {path.parent} "
            f"(torch.hub's <TORCH_HOME>/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch). "
            f"Copy {url} there from a machine with internet access, or pass the file as a local state dict: "
            f"--set model.weights=/path/to/{path.name} (weights: /path/to/{path.name} in the config)."
        ) from None


def local_state_dict(weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict at the path ``weights`` names."""
    path = _local_path(weights)
    return read_state_dict(path), str(path)


def _local_path(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"model.weights={weights!r}: no such file; expected 'imagenet', 'none' or the path of a state dict "
            "saved with torch.save(model.state_dict(), path)"
        )
    return path


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], head_path: str, source: str, name: str) -> None:
    """Load every backbone tensor from ``state``; the head's (and auxiliary heads') entries are ignored.

    Any other missing, unexpected or differently shaped entry is an error: a
    file from another architecture must not half-load.
    """
    state = {(_DENSENET_LEGACY.sub(r"\1\2", k)): v for k, v in state.items()}

    def ours(key: str) -> bool:
        return not key.startswith((f"{head_path}.", *_AUX_PREFIXES))

    own = {k: v for k, v in model.state_dict().items() if ours(k)}
    given = {k: v for k, v in state.items() if ours(k)}
    # Files saved before BatchNorm counted batches lack num_batches_tracked; load_state_dict fills it.
    missing = sorted(k for k in own.keys() - given.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given.keys() - own.keys())
    shapes = sorted(
        f"{k}: file {list(given[k].shape)} vs model {list(own[k].shape)}"
        for k in own.keys() & given.keys()
        if given[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        problems = [
            f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
            for items, what in ((missing, "missing keys"), (unexpected, "unexpected keys"), (shapes, "other shapes"))
            if items
        ]
        raise CheckpointError(
            f"model.weights: {source} does not fit {name}: {'; '.join(problems)}. "
            f"Expected a state dict of torchvision.models.{name}() (its classifier entries are ignored)."
        )
    model.load_state_dict(given, strict=False)
