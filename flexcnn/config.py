"""The run configuration: one validated pydantic tree, loaded from YAML plus overrides.

Every field is checked at load time (``extra="forbid"``, literals, bounds), so a
typo fails before any data is read, with the field's dotted path and the values
that were expected.

This module sits above models and data: importing them fills their registries,
and ``RunConfig`` is assembled from what registered there. ``model`` is a union
of the registered models' config classes, picked by ``kind``; ``data.source``
is one of the registered sources. The sections models and data read themselves
live in ``flexcnn.sections``.
"""

from __future__ import annotations

import difflib
import functools
import json
import operator
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
    field_validator,
)

from flexcnn.data.sources import source_entries, source_names
from flexcnn.errors import ConfigError
from flexcnn.models.registry import config_tag, find_model, known_kinds, model_entries, unknown_kind
from flexcnn.overrides import apply_override, walk_schema
from flexcnn.sections import DataConfig, LoggingConfig, OptimConfig, Section, TrainConfig

DEFAULT_MODEL_KIND = "flexible_cnn"
# The union member a kind that no model registered is sent to, so that its error names model.kind.
UNKNOWN_KIND_TAG = "unknown_kind"


class UnknownModel(Section):
    """Stands for a model config whose kind no model registered: validating it reports the kind.

    Its other fields are ignored: they cannot be checked without knowing the model.
    """

    model_config = ConfigDict(extra="ignore")

    kind: str

    @field_validator("kind")
    @classmethod
    def _never_registered(cls, value: str) -> str:
        raise ValueError(unknown_kind(value))


def _model_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", DEFAULT_MODEL_KIND)
    else:
        kind = getattr(value, "kind", None)
        if kind is None:
            return None  # not a mapping: pydantic reports the section's expected shape
    entry = find_model(kind)
    return config_tag(entry.config) if entry is not None else UNKNOWN_KIND_TAG


def _default_model() -> BaseModel:
    """The model of a config without a model section: the default kind with its defaults."""
    entry = find_model(DEFAULT_MODEL_KIND)
    assert entry is not None, f"{DEFAULT_MODEL_KIND} is not registered"
    return entry.config(kind=DEFAULT_MODEL_KIND)


def _model_union() -> Any:
    """``model``'s type: each registered config class, tagged, picked by kind."""
    configs = {config_tag(e.config): e.config for e in model_entries()}
    members = [Annotated[cls, Tag(tag)] for tag, cls in configs.items()]
    members.append(Annotated[UnknownModel, Tag(UNKNOWN_KIND_TAG)])
    return Annotated[functools.reduce(operator.or_, members), Discriminator(_model_tag)]


ModelConfig = _model_union()
# The tags pydantic puts in error locations (model.pretrained.kind); error_field drops them.
MODEL_TAGS = frozenset([*(config_tag(e.config) for e in model_entries()), UNKNOWN_KIND_TAG])
SourceName = Literal[source_names()]  # type: ignore[valid-type]
_NEEDS_ROOT = frozenset(e.name for e in source_entries() if e.needs_root)


class RunDataConfig(DataConfig):
    """The data section as a run config validates it: ``source`` must be a registered source."""

    source: SourceName = "digits"

    def check_consistent(self) -> None:
        """The checks of DataConfig, after data.root where the source reads the user's files."""
        if self.source in _NEEDS_ROOT and self.root is None:
            raise ValueError(f"data.root is required for source {self.source!r}")
        super().check_consistent()


class RunConfig(Section):
    """Everything one training run needs."""

    model: ModelConfig = Field(default_factory=_default_model)
    data: RunDataConfig = Field(default_factory=RunDataConfig)
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
            message = f"expected a mapping with a kind ({known_kinds()})"
            message += f" (got {err.get('input')!r})"
        elif err["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(exc, err["loc"])
        elif ("input" in err and not isinstance(err["input"], dict | list)) or err["type"] == "literal_error":
            message += f" (got {err['input']!r})"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def error_field(err: Mapping[str, Any]) -> str:
    """The dotted config field of one pydantic error (``model.num_filters.0``), without union tags."""
    return ".".join(str(p) for p in err["loc"] if p not in MODEL_TAGS) or "(top level)"


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
