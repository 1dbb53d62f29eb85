"""A sweep's ``parameters`` as a search space: Optuna distributions to sample, constants to fix.

Each leaf of a sweep's ``parameters`` becomes one Optuna parameter named by its
dotted config path (``optim.lr``); nested ``parameters:`` blocks add to the
path. Constants (``value``) are not searched: they are fixed overrides. Every
name is checked against the config schema when the sweep is loaded.

One parameter's translation (W&B distribution -> Optuna) is
:mod:`flexcnn.search.params`; dotted overrides themselves (applying,
flattening, checking a path against the schema) are :mod:`flexcnn.overrides`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flexcnn.config import RunConfig
from flexcnn.errors import ConfigError
from flexcnn.overrides import flatten, walk_schema
from flexcnn.search.params import PARAM_KEYS, SUPPORTED, Param, infer_kind, make_param, plain

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters plus the constants of a sweep."""

    params: tuple[Param, ...]
    constants: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution for p in self.params}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample every parameter for ``trial``; return dotted name -> config value."""
        return {p.name: p.suggest(trial) for p in self.params}

    def decode(self, raw_params: Mapping[str, Any]) -> dict[str, Any]:
        """Decode a finished trial's ``params`` (as Optuna stores them) to config values."""
        return {p.name: p.decode(raw_params[p.name]) for p in self.params if p.name in raw_params}

    def grid(self) -> dict[str, list[Any]]:
        """The grid for GridSampler; ConfigError if a parameter is continuous."""
        return {p.name: p.grid_values() for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def largest(self, name: str) -> Any:
        """The largest value a parameter (or constant) can take, or None when not in the sweep."""
        if name in self.constants:
            return self.constants[name]
        for p in self.params:
            if p.name == name:
                dist = p.distribution
                if hasattr(dist, "high"):
                    return p.decode(dist.high)
                values = [p.decode(c) for c in dist.choices]  # type: ignore[attr-defined]
                numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
                return max(numbers) if numbers else None
        return None


def build_space(parameters: Mapping[str, Any]) -> SearchSpace:
    """Translate a sweep's ``parameters`` mapping; ConfigError names the parameter and the supported forms."""
    params: list[Param] = []
    constants: dict[str, Any] = {}
    _walk(parameters, "", params, constants)
    names = [p.name for p in params] + list(constants)
    for name in names:
        _check_path(name, section_ok=_is_mapping_param(name, params, constants))
    _check_no_overlap(names)
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return SearchSpace(tuple(params), constants, digest)


def format_value(value: Any) -> str:
    """A short, readable rendering of a parameter value for tables and logs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- translation


def _walk(parameters: Any, prefix: str, params: list[Param], constants: dict[str, Any]) -> None:
    if not isinstance(parameters, Mapping) or not parameters:
        where = f"sweep parameter {prefix.rstrip('.')}" if prefix else "sweep parameters"
        raise ConfigError(f"{where}: expected a non-empty mapping of parameter name -> spec")
    for key, spec in parameters.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"sweep parameter {name!r}: names are dotted config paths such as optim.lr")
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"sweep parameter {name}: expected a mapping such as {{values: [...]}} or {{min: .., max: ..}}, "
                f"got {spec!r}"
            )
        unknown = sorted(set(spec) - set(PARAM_KEYS))
        if unknown:
            raise ConfigError(
                f"sweep parameter {name}: unsupported key(s) {', '.join(map(str, unknown))}; "
                f"supported: {', '.join(SUPPORTED)}"
            )
        if "parameters" in spec:
            if len(spec) != 1:
                raise ConfigError(f"sweep parameter {name}: a nested 'parameters:' block takes no other keys")
            _walk(spec["parameters"], f"{name}.", params, constants)
            continue
        kind = infer_kind(name, spec)
        if kind == "constant":
            if "value" not in spec:
                raise ConfigError(f"sweep parameter {name}: distribution constant needs 'value'")
            value = plain(spec["value"])
            if isinstance(value, dict):
                constants.update(flatten(value, prefix=f"{name}."))
            else:
                constants[name] = value
            continue
        params.append(make_param(name, kind, spec))


def _is_mapping_param(name: str, params: list[Param], constants: dict[str, Any]) -> bool:
    for p in params:
        if p.name == name and p.encoded:
            return all(isinstance(p.decode(c), dict) for c in p.distribution.choices)  # type: ignore[attr-defined]
    return False


def _check_path(name: str, section_ok: bool) -> None:
    """Fail at load time when a parameter names no RunConfig field (with a suggestion)."""
    path = walk_schema(RunConfig, name)
    if not path.complete and not path.models:
        raise ConfigError(f"sweep parameter {name}: {path.walked} is a value, not a config section")
    if not path.complete:
        here = ".".join(path.parts[: path.reached + 1])
        close = path.suggestion()
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(
            f"sweep parameter {name}: {here} is not a config field{hint} (expected one of: {', '.join(path.known())})"
        )
    if path.models and not path.holds_value and not section_ok:
        raise ConfigError(
            f"sweep parameter {name}: {path.walked} is a config section; sweep its fields with a nested "
            "'parameters:' block, or give mappings as values"
        )


def _check_no_overlap(names: list[str]) -> None:
    seen = set(names)
    if len(seen) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"sweep parameters: {', '.join(dup)} given more than once (flat and nested?)")
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) in seen:
                raise ConfigError(f"sweep parameters: {name} sits inside {'.'.join(parts[:i])}, which is also swept")
