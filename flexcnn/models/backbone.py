"""Surgery on a torchvision classifier: a new head, and the backbone cut into stages.

Stages are counted in the model's own units (ResNet ``layer1`` .. ``layer4``,
VGG conv blocks, DenseNet dense blocks, the children of ``features`` for
EfficientNet/MobileNet/ConvNeXt/Swin, ViT encoder layers, ...), so that
``unfreeze_stages`` means the same thing to a user of any of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from flexcnn.errors import ConfigError

# Containers whose children are the model's stages; the first one found among
# the top-level children is expanded, its siblings before it count as stages
# (stems), those after it sit above the last stage.
_TRUNKS = ("features", "trunk_output", "layers", "blocks", "encoder.layers")
# Children that belong with the stage before them (DenseNet's transitions and final norm).
_JOIN_PREVIOUS = re.compile(r"(^|\.)(transition\d+|norm5)$")


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
