"""Dotted overrides (``optim.lr=1e-3``): parse, apply, flatten, and check a dotted path against a schema.

Three callers share these: ``--set`` on the command line (config.py), a sweep's
parameters and constants (search/space.py) and the JSON file ``wandb agent``
writes (cli/train.py). Each keeps its own error messages; what they share is
how a dotted key walks a nested mapping and a pydantic schema.

The schema walk takes the root model class as an argument and follows pydantic
annotations generically (nested models, ``Optional``, unions and discriminated
unions: every member), so this module imports no config module; config.py
imports it.
"""

from __future__ import annotations

import copy
import difflib
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, Tag

from flexcnn.errors import ConfigError

# --------------------------------------------------------------------------- values and trees


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would, plus ``1e-3`` style floats.

    PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a string; users mean a number.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse override value {text!r}: {exc}") from None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number):
            return number
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict, in place."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    *parents, leaf = key.split(".")
    node = tree
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"override {key!r}: {where} is a value, not a section")
        node = child
    node[leaf] = parse_value(raw)


def apply_overrides(tree: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with dotted ``overrides`` set; mapping values merge into their section.

    Unlike :func:`apply_override`, a value in the way of a dotted key is replaced by a section:
    the overrides come from a sweep whose paths were checked against the schema already.
    """
    out = copy.deepcopy(dict(tree))
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = apply_overrides(node[leaf], flatten(value))
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def dotted_items(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` for every leaf of a nested mapping, in order.

    An empty mapping is a leaf (its value is ``{}``): whether that is an error is the caller's to say.
    """
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from dotted_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``)."""
    return dict(dotted_items(tree, prefix))


# --------------------------------------------------------------------------- dotted paths vs a schema


@dataclass(frozen=True)
class SchemaPath:
    """How far a dotted path got in a pydantic schema.

    ``reached`` parts were fields (or union tags); ``models`` are the sections
    where the walk stopped (several when a field is a union of models; none
    when the last field walked holds a plain value); ``holds_value`` says
    whether that last field can hold a plain value (a field that is a model
    in every member cannot).
    """

    parts: tuple[str, ...]
    reached: int
    models: tuple[type[BaseModel], ...]
    holds_value: bool = False

    @property
    def complete(self) -> bool:
        """Every part named a field."""
        return self.reached == len(self.parts)

    @property
    def walked(self) -> str:
        """The parts that named fields, dotted (``model.activation``)."""
        return ".".join(self.parts[: self.reached])

    def known(self) -> list[str]:
        """The field names allowed where the walk stopped, sorted."""
        return sorted({name for model in self.models for name in model.model_fields})

    def suggestion(self) -> str | None:
        """The known field closest to the first part that named none (a typo's fix), if any is close."""
        if self.complete:
            return None
        close = difflib.get_close_matches(self.parts[self.reached], self.known(), n=1)
        return close[0] if close else None


def walk_schema(root: type[BaseModel], path: str | Sequence[Any], *, union_tags: bool = False) -> SchemaPath:
    """Follow ``path`` (``"model.activation"`` or a sequence of parts) from the model class ``root``.

    ``union_tags``: a part may name the member of a discriminated union instead
    of a field, as in pydantic's error locations (``model.flexible_cnn.foo``);
    dotted override paths never do.
    """
    parts = tuple(str(p) for p in (path.split(".") if isinstance(path, str) else path))
    members: list[tuple[frozenset[str], type[BaseModel]]] = [(frozenset(), root)]
    holds_value = False
    for depth, part in enumerate(parts):
        if union_tags and any(part in tags for tags, _ in members):
            members = [(frozenset(), model) for tags, model in members if part in tags]
            continue
        fields = [model.model_fields[part] for _, model in members if part in model.model_fields]
        if not fields:
            return SchemaPath(parts, depth, tuple(model for _, model in members), holds_value)
        members = [member for f in fields for member in models_in(f.annotation, f.discriminator)]
        holds_value = any(not models_in(f.annotation) for f in fields)
    return SchemaPath(parts, len(parts), tuple(model for _, model in members), holds_value)


def models_in(annotation: Any, discriminator: Any = None) -> list[tuple[frozenset[str], type[BaseModel]]]:
    """Every pydantic model an annotation can hold, with the union tags that select it.

    Follows ``Optional``, unions, ``Annotated`` and containers. Tags come from
    pydantic ``Tag(...)`` markers or, for a field with a string
    ``discriminator``, from the ``Literal`` values of that field in each member.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(_literal_tags(annotation, discriminator), annotation)]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        tags = frozenset(m.tag for m in args[1:] if isinstance(m, Tag))
        return [(found | tags, model) for found, model in models_in(args[0], discriminator)]
    return [member for arg in args for member in models_in(arg, discriminator)]


def _literal_tags(model: type[BaseModel], discriminator: Any) -> frozenset[str]:
    if not isinstance(discriminator, str) or discriminator not in model.model_fields:
        return frozenset()
    annotation = model.model_fields[discriminator].annotation
    if typing.get_origin(annotation) is not typing.Literal:
        return frozenset()
    return frozenset(str(value) for value in typing.get_args(annotation))
