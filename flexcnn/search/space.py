"""W&B sweep ``parameters`` -> Optuna distributions, and sampled values -> config overrides.

Each leaf of a sweep's ``parameters`` becomes one Optuna parameter named by its
dotted config path (``optim.lr``); nested ``parameters:`` blocks add to the
path. Constants (``value``) are not searched: they are fixed overrides.
Categorical choices that Optuna cannot store (lists such as
``num_filters: [16, 32]``, mappings) are stored as JSON text and decoded back,
so the dashboard shows ``[16, 32]`` and the config receives a list.

W&B distributions and their Optuna counterparts:

=========================  ===================================================
``value`` / constant       fixed override, not searched
``values`` / categorical   CategoricalDistribution
``min``+``max`` (ints)     int_uniform: IntDistribution
``min``+``max`` (floats)   uniform: FloatDistribution
log_uniform_values         FloatDistribution(log=True)
inv_log_uniform_values     FloatDistribution(log=True): 1/X of a log-uniform X
                           is log-uniform on the same bounds
q_uniform                  Int/FloatDistribution(step=q) on multiples of q
q_log_uniform_values       IntDistribution(log=True) when q=1 and bounds are
                           ints, else a log-uniform float rounded to q
log_uniform, inv_log_uniform, q_log_uniform
                           the same, with bounds given as natural logarithms
=========================  ===================================================
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flexcnn.config import RunConfig
from flexcnn.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

SUPPORTED = (
    "value (constant)",
    "values (categorical)",
    "min/max (int_uniform or uniform)",
    "uniform",
    "int_uniform",
    "log_uniform_values",
    "inv_log_uniform_values",
    "q_uniform",
    "q_log_uniform_values",
    "log_uniform",
    "inv_log_uniform",
    "q_log_uniform",
    "categorical",
    "constant",
    "nested parameters: blocks",
)
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "parameters")
_NATIVE = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched parameter: its dotted name, Optuna distribution and how to decode samples."""

    name: str
    kind: str  # the W&B distribution, after W&B's inference rules
    distribution: BaseDistribution
    encoded: bool = False  # categorical choices stored as JSON text
    quantum: float | int | None = None  # rounding step applied after a continuous sample

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Ask ``trial`` for this parameter; return the value the config receives."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            raw = trial.suggest_categorical(self.name, dist.choices)
        elif isinstance(dist, IntDistribution):
            raw = trial.suggest_int(self.name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            assert isinstance(dist, FloatDistribution)
            raw = trial.suggest_float(self.name, dist.low, dist.high, step=dist.step, log=dist.log)
        return self.decode(raw)

    def decode(self, raw: Any) -> Any:
        """Turn a value as Optuna stores it into the value the config receives."""
        if self.encoded:
            return json.loads(raw)
        if self.quantum is not None:
            rounded = round(raw / self.quantum) * self.quantum
            return int(rounded) if isinstance(self.quantum, int) else float(rounded)
        return raw

    def first(self) -> Any:
        """The first choice (categorical) or the lower bound, as the config receives it."""
        from optuna.distributions import CategoricalDistribution

        dist = self.distribution
        return self.decode(dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low)  # type: ignore[attr-defined]

    def edge_values(self) -> list[Any]:
        """Every choice (categorical) or both bounds, as the config receives them."""
        from optuna.distributions import CategoricalDistribution

        dist = self.distribution
        raw = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)  # type: ignore[attr-defined]
        return [self.decode(v) for v in raw]

    def grid_values(self) -> list[Any]:
        """The values a grid search visits, as Optuna stores them."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high + 1, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None and not dist.log:
            n = round((dist.high - dist.low) / dist.step)
            return [_clean(dist.low + i * dist.step) for i in range(n + 1)]
        raise ConfigError(
            f"sweep parameter {self.name}: method grid needs discrete values, but {self.kind} is continuous; "
            "use values: [...], int_uniform or q_uniform"
        )


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


def apply_overrides(tree: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with dotted ``overrides`` set; mapping values merge into their section."""
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
            node[leaf] = apply_overrides(node[leaf], _flatten(value))
        else:
            node[leaf] = copy.deepcopy(value)
    return out


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
        kind = _infer_kind(name, spec)
        if kind == "constant":
            if "value" not in spec:
                raise ConfigError(f"sweep parameter {name}: distribution constant needs 'value'")
            value = _plain(spec["value"])
            if isinstance(value, dict):
                for sub, sub_value in _flatten(value).items():
                    constants[f"{name}.{sub}"] = sub_value
            else:
                constants[name] = value
            continue
        params.append(_param(name, kind, spec))


def _infer_kind(name: str, spec: Mapping[str, Any]) -> str:
    """W&B's rule: an explicit distribution wins; else value, values, or min/max by their types."""
    if "distribution" in spec:
        kind = spec["distribution"]
        if not isinstance(kind, str):
            raise ConfigError(f"sweep parameter {name}: distribution must be a name, got {kind!r}")
        return kind
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        lo, hi = _number_like(spec["min"]), _number_like(spec["max"])
        both_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
        return "int_uniform" if both_int else "uniform"
    raise ConfigError(
        f"sweep parameter {name}: give value, values, or min and max (with an optional distribution); "
        f"supported: {', '.join(SUPPORTED)}"
    )


def _param(name: str, kind: str, spec: Mapping[str, Any]) -> Param:
    from optuna.distributions import FloatDistribution, IntDistribution

    def allowed(*keys: str) -> None:
        extra = sorted(set(spec) - {"distribution", *keys})
        if extra:
            raise ConfigError(f"sweep parameter {name}: {kind} takes {', '.join(keys)}, not {', '.join(extra)}")

    if kind == "categorical":
        allowed("values")
        return _categorical(name, spec.get("values"))
    if kind == "int_uniform":
        allowed("min", "max")
        lo, hi = _bounds(name, spec, integer=True)
        return Param(name, kind, IntDistribution(int(lo), int(hi)))
    if kind == "uniform":
        allowed("min", "max")
        lo, hi = _bounds(name, spec)
        return Param(name, kind, FloatDistribution(float(lo), float(hi)))
    if kind in ("log_uniform_values", "inv_log_uniform_values", "log_uniform", "inv_log_uniform"):
        allowed("min", "max")
        lo, hi = _value_bounds(name, kind, spec)
        return Param(name, kind, FloatDistribution(lo, hi, log=True))
    if kind == "q_uniform":
        allowed("min", "max", "q")
        lo, hi = _bounds(name, spec)
        q = _quantum(name, spec)
        first, last = math.ceil(lo / q - 1e-9), math.floor(hi / q + 1e-9)
        if first > last:
            raise ConfigError(f"sweep parameter {name}: no multiple of q={q} lies between min and max")
        if isinstance(q, int):  # W&B returns ints when q is an int
            return Param(name, kind, IntDistribution(first * q, last * q, step=q))
        return Param(name, kind, FloatDistribution(_clean(first * q), _clean(last * q), step=q))
    if kind in ("q_log_uniform_values", "q_log_uniform"):
        allowed("min", "max", "q")
        lo, hi = _value_bounds(name, kind, spec)
        q = _quantum(name, spec)
        if q == 1 and isinstance(q, int) and float(lo).is_integer() and float(hi).is_integer():
            return Param(name, kind, IntDistribution(int(lo), int(hi), log=True))
        # Optuna has no quantised log-uniform float: sample continuously, round like W&B.
        return Param(name, kind, FloatDistribution(lo, hi, log=True), quantum=q)
    raise ConfigError(
        f"sweep parameter {name}: distribution {kind!r} is not supported; supported: {', '.join(SUPPORTED)}"
    )


def _categorical(name: str, values: Any) -> Param:
    from optuna.distributions import CategoricalDistribution

    if not isinstance(values, list) or not values:
        raise ConfigError(f"sweep parameter {name}: values must be a non-empty list, got {values!r}")
    values = [_plain(v) for v in values]
    encoded = not all(isinstance(v, _NATIVE) for v in values)
    choices = [json.dumps(v) for v in values] if encoded else values
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise ConfigError(f"sweep parameter {name}: values contains duplicates: {values!r}")
    return Param(name, "categorical", CategoricalDistribution(choices), encoded=encoded)


def _bounds(name: str, spec: Mapping[str, Any], integer: bool = False) -> tuple[float | int, float | int]:
    if "min" not in spec or "max" not in spec:
        raise ConfigError(f"sweep parameter {name}: needs both min and max")
    lo, hi = _number_like(spec["min"]), _number_like(spec["max"])
    for label, v in (("min", lo), ("max", hi)):
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"sweep parameter {name}: {label} must be a finite number, got {spec[label]!r}")
        if integer and not float(v).is_integer():
            raise ConfigError(f"sweep parameter {name}: int_uniform needs integer bounds, got {label}={v!r}")
    if lo >= hi:
        raise ConfigError(f"sweep parameter {name}: min {lo} must be less than max {hi}")
    return lo, hi


def _value_bounds(name: str, kind: str, spec: Mapping[str, Any]) -> tuple[float, float]:
    """Bounds on the value itself: *_values kinds give them directly, the others as natural logs."""
    lo, hi = _bounds(name, spec)
    if kind.endswith("_values"):
        if lo <= 0:
            raise ConfigError(f"sweep parameter {name}: {kind} needs min > 0, got {lo}")
        return float(lo), float(hi)
    if kind.startswith("inv_"):
        # W&B: X = exp(-U), U ~ uniform(min, max)
        return math.exp(-hi), math.exp(-lo)
    return math.exp(lo), math.exp(hi)


def _quantum(name: str, spec: Mapping[str, Any]) -> float | int:
    q = _number_like(spec.get("q", 1))
    if not isinstance(q, int | float) or isinstance(q, bool) or not q > 0:
        raise ConfigError(f"sweep parameter {name}: q must be a positive number, got {spec.get('q')!r}")
    return int(q) if isinstance(q, int) else float(q)


def _number_like(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; sweep authors mean a number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _plain(value: Any) -> Any:
    """Numbers written as 1e-3 become floats, inside lists and mappings too."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return _number_like(value)


def _clean(x: float) -> float:
    return float(f"{x:.12g}")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --------------------------------------------------------------------------- names vs the config schema


def _is_mapping_param(name: str, params: list[Param], constants: dict[str, Any]) -> bool:
    for p in params:
        if p.name == name and p.encoded:
            return all(isinstance(p.decode(c), dict) for c in p.distribution.choices)  # type: ignore[attr-defined]
    return False


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _check_path(name: str, section_ok: bool) -> None:
    """Fail at load time when a parameter names no RunConfig field (with a suggestion)."""
    models: list[type[BaseModel]] = [RunConfig]
    parts = name.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if not models:
            raise ConfigError(f"sweep parameter {name}: {'.'.join(parts[:depth])} is a value, not a config section")
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            known = sorted({f for m in models for f in m.model_fields})
            close = difflib.get_close_matches(part, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"sweep parameter {name}: {here} is not a config field{hint} (expected one of: {', '.join(known)})"
            )
        models = [sub for f in fields for sub in _models_in(f.annotation)]
        is_leaf = any(not _models_in(f.annotation) for f in fields)
        if depth == len(parts) - 1 and models and not is_leaf and not section_ok:
            raise ConfigError(
                f"sweep parameter {name}: {here} is a config section; sweep its fields with a nested "
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
