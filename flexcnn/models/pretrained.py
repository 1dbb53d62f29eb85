"""Pretrained torchvision classifiers with a new head, fine-tuned by one of four strategies.

``resnet50``, ``vgg19`` and ``torchvision:<name>`` (any classifier that
``torchvision.models.list_models`` lists) are built the same way:

1. the torchvision architecture, built without weights (so torchvision never
   unpickles a file itself: every state dict goes through ``torch.load(...,
   weights_only=True)`` here);
2. its final classification layer replaced by a new head for ``num_classes``
   (optional hidden layer and dropout);
3. the backbone's weights loaded from torchvision's ImageNet file (cached under
   ``TORCH_HOME``), from a local state dict, or left random;
4. the backbone split into *stages* in the model's own units (ResNet
   ``layer1`` .. ``layer4``, VGG conv blocks, DenseNet dense blocks, the
   children of ``features`` for EfficientNet/MobileNet/ConvNeXt/Swin, ViT
   encoder layers, ...). Unfreezing the last K stages makes everything from
   the start of the K-th-from-last stage to the output trainable, so layers
   that sit above the last stage (VGG's fc6/fc7, ConvNeXt's final norm) train
   with it.

Frozen layers are kept in eval mode while training, so the running statistics
of their batch-norm layers do not move and their dropout is off.
"""

from __future__ import annotations

import difflib
import functools
import http.client
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from flexcnn.checkpoint import safe_torch_load
from flexcnn.config import PretrainedConfig
from flexcnn.data.augment import IMAGENET_MEAN, IMAGENET_STD
from flexcnn.errors import CheckpointError, ConfigError, UserError
from flexcnn.models.registry import InputRequest, InputSpec, ModelAdapter, register

log = logging.getLogger(__name__)

PREFIX = "torchvision:"

# Containers whose children are the model's stages; the first one found among
# the top-level children is expanded, its siblings before it count as stages
# (stems), those after it sit above the last stage.
_TRUNKS = ("features", "trunk_output", "layers", "blocks", "encoder.layers")
# Children that belong with the stage before them (DenseNet's transitions and final norm).
_JOIN_PREVIOUS = re.compile(r"(^|\.)(transition\d+|norm5)$")
# Auxiliary classifiers of GoogLeNet / Inception v3: built off, their keys in a state dict ignored.
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# Old DenseNet files name layers 'norm.1' where the module is now 'norm1' (as torchvision remaps).
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
# Below this size a conv net may pool its feature map away; check with one forward pass at build time.
_CHECK_SIZE_BELOW = 64


class WeightsUnavailable(UserError):
    """ImageNet weights are neither cached nor downloadable (offline, air-gapped)."""


# --------------------------------------------------------------------------- names and weights


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


def weights_file(name: str) -> Path:
    """Where torch.hub caches ``name``'s ImageNet weights: ``<hub dir>/checkpoints/<file>``."""
    url = default_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _arch_kwargs(name: str, *, random_init: bool) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- input request


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


# --------------------------------------------------------------------------- head


def make_head(in_features: int, num_classes: int, hidden: int | None, dropout: float) -> nn.Sequential:
    """[Linear -> ReLU] -> [Dropout] -> Linear: the new classifier on top of the backbone."""
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
        in_features = hidden
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def attach_head(model: nn.Module, num_classes: int, hidden: int | None, dropout: float) -> tuple[str, nn.Module]:
    """Replace the model's final classification layer with a new head; return its path and module."""
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        path, last = linears[-1]
        head: nn.Module = make_head(last.in_features, num_classes, hidden, dropout)
    else:
        # SqueezeNet classifies with a 1x1 conv over the feature map: pool, then the same head.
        path = "classifier"
        convs = [m for m in model.get_submodule(path).modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ConfigError(f"cannot find the classification layer of {type(model).__name__}")
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), make_head(convs[-1].in_channels, num_classes, hidden, dropout)
        )
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, head)
    return path, head


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One unit of the backbone that ``unfreeze_stages`` counts."""

    name: str
    modules: tuple[nn.Module, ...]


def _children_in_order(model: nn.Module, head_path: str) -> Iterator[tuple[str, nn.Module]]:
    """Top-level children up to the trunk, then the trunk's children; stop at what lies above."""
    head_top = head_path.split(".")[0]
    for name, child in model.named_children():
        if name == head_top:
            return
        trunk = next((t for t in _TRUNKS if t.split(".")[0] == name), None)
        if trunk is not None:
            container = model.get_submodule(trunk)
            yield from ((f"{trunk}.{n}", m) for n, m in container.named_children())
            return
        yield name, child


def backbone_stages(model: nn.Module, head_path: str) -> list[Stage]:
    """The backbone's stages from input to output, each with parameters.

    Containers (ResNet layers, dense blocks, MBConv stages, encoder layers) are
    one stage each; runs of plain layers (VGG, AlexNet, stems) form a stage that
    ends at a pooling layer, as VGG's conv blocks do.
    """
    stages: list[tuple[list[str], list[nn.Module]]] = []
    run: tuple[list[str], list[nn.Module]] | None = None
    for name, child in _children_in_order(model, head_path):
        if _JOIN_PREVIOUS.search(name) and stages:
            stages[-1][0].append(name)
            stages[-1][1].append(child)
            continue
        if next(child.children(), None) is not None:
            run = None
            stages.append(([name], [child]))
            continue
        if run is None:
            run = ([], [])
            stages.append(run)
        run[0].append(name)
        run[1].append(child)
        if isinstance(child, nn.MaxPool2d | nn.AvgPool2d):
            run = None
    out = []
    for names, modules in stages:
        if any(True for m in modules for _ in m.parameters()):
            label = names[0] if len(names) == 1 else f"{names[0]}..{_strip_common_prefix(names[-1], names[0])}"
            out.append(Stage(label, tuple(modules)))
    return out


def _strip_common_prefix(name: str, like: str) -> str:
    # 'features.36' after 'features.28' reads as 'features.28..36'
    parent = like.rpartition(".")[0]
    return name.removeprefix(f"{parent}.") if parent else name


# --------------------------------------------------------------------------- adapter


class PretrainedAdapter(ModelAdapter):
    """A backbone + new head whose trainable part is set by the fine-tuning strategy.

    The trainable part is everything at or after a *cut* in module order (the
    start of a stage), plus the head. feature_extraction: head only; partial:
    the last K stages; full: everything; two_phase: head only until
    ``head_epochs``, then the last K stages (``on_epoch_start`` returns True and
    run() rebuilds the optimiser).
    """

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        *,
        name: str,
        head: nn.Module,
        stages: list[Stage],
        strategy: str,
        unfreeze_stages: int,
        head_epochs: int,
        backbone_lr_mult: float,
    ) -> None:
        super().__init__(module, spec)
        self.name, self.head, self.stages, self.strategy = name, head, stages, strategy
        self.backbone_lr_mult = backbone_lr_mult
        if unfreeze_stages > len(stages) and strategy in ("partial", "two_phase"):
            log.warning(
                "model.unfreeze_stages=%d but %s has %d stages; unfreezing all of them",
                unfreeze_stages,
                name,
                len(stages),
            )
        self.unfreeze_stages = min(unfreeze_stages, len(stages))
        # run() reads this to know when the optimiser was last rebuilt (on resume).
        self.phase_switch_epoch: int | None = (
            head_epochs if strategy == "two_phase" and self.unfreeze_stages > 0 else None
        )
        self._switched = False
        index = {id(m): i for i, m in enumerate(module.modules())}
        self._n_modules = len(index)
        head_modules = {id(m) for m in head.modules()}
        self._head_params = {id(p) for p in head.parameters()}
        self._params = [(index[id(m)], p) for m in module.modules() for p in m.parameters(recurse=False)]
        self._leaves = [
            (index[id(m)], m)
            for m in module.modules()
            if next(m.children(), None) is None and id(m) not in head_modules
        ]
        self._stage_starts = [min(index[id(m)] for m in s.modules) for s in stages]
        self._frozen: list[nn.Module] = []
        self.cut = 0
        initial = {"feature_extraction": 0, "two_phase": 0, "partial": self.unfreeze_stages}.get(strategy, sys.maxsize)
        self._set_trainable(initial)

    def _cut_for(self, stages: int) -> int:
        if stages <= 0:
            return self._n_modules  # past every module: only the head trains
        if stages >= len(self.stages):
            return 0  # everything, including parameters outside any stage (ViT's class token)
        return self._stage_starts[len(self.stages) - stages]

    def _set_trainable(self, stages: int) -> None:
        self.cut = self._cut_for(stages)
        self.trainable_stages = min(stages, len(self.stages))
        for i, p in self._params:
            p.requires_grad_(id(p) in self._head_params or i >= self.cut)
        self._frozen = [m for i, m in self._leaves if i < self.cut]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Backbone at ``lr * backbone_lr_mult``, head at ``lr``; trainable parameters only.

        The head is the last group, so the logged ``lr`` is the head's.
        """
        backbone = [p for _, p in self._params if p.requires_grad and id(p) not in self._head_params]
        head = [p for p in self.head.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": lr * self.backbone_lr_mult, "name": "backbone"},
            {"params": head, "lr": lr, "name": "head"},
        ]

    def on_epoch_start(self, epoch: int) -> bool:
        """two_phase: at ``head_epochs`` unfreeze the last K stages; True when that changed the trainable set."""
        if self.phase_switch_epoch is None or self._switched or epoch < self.phase_switch_epoch:
            return False
        self._switched = True
        before = self.cut
        self._set_trainable(self.unfreeze_stages)
        log.info(
            "two_phase: epoch %d, unfreezing %s (%s trainable parameters)",
            epoch + 1,
            ", ".join(s.name for s in self.stages[len(self.stages) - self.unfreeze_stages :]),
            f"{self.parameter_counts()['params/trainable']:,}",
        )
        return self.cut != before

    def train_mode(self) -> None:
        """Training mode, except frozen layers: their batch-norm statistics stay put, their dropout off."""
        self.module.train()
        for m in self._frozen:
            m.eval()

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameters, the head's, and for two_phase the trainable count after the switch."""
        counts = super().parameter_counts()
        counts["params/head"] = sum(p.numel() for p in self.head.parameters())
        if self.phase_switch_epoch is not None:
            cut = self._cut_for(self.unfreeze_stages)
            counts["params/trainable_phase2"] = sum(
                p.numel() for i, p in self._params if id(p) in self._head_params or i >= cut
            )
        return counts

    def describe(self) -> str:
        """One line: strategy, trainable stages and parameter counts."""
        counts = self.parameter_counts()
        names = [s.name for s in self.stages[len(self.stages) - self.trainable_stages :]]
        return (
            f"{self.name} ({self.strategy}): training {', '.join([*names, 'head'])}; "
            f"{counts['params/trainable']:,} of {counts['params/total']:,} parameters trainable; "
            f"stages: {', '.join(s.name for s in self.stages)}"
        )


# --------------------------------------------------------------------------- weights


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


# --------------------------------------------------------------------------- builders


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
    model = get_model(name, weights=None, **_arch_kwargs(name, random_init=source == "none"))
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

register("resnet50", description=f"ResNet50, ImageNet weights; {_STRATEGIES}", request=request_input)(build_pretrained)
register("vgg19", description=f"VGG19, ImageNet weights; {_STRATEGIES}", request=request_input)(build_pretrained)
register(
    PREFIX,
    prefix=True,
    description="any torchvision classifier (torchvision:resnet18, torchvision:convnext_tiny, ...); same strategies",
    request=request_input,
)(build_pretrained)
