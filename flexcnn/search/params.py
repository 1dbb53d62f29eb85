"""One sweep parameter: a W&B distribution spec -> an Optuna distribution, and samples back to config values.

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

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


def infer_kind(name: str, spec: Mapping[str, Any]) -> str:
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


def make_param(name: str, kind: str, spec: Mapping[str, Any]) -> Param:
    """The parameter ``name`` for its W&B ``spec`` (``kind`` from :func:`infer_kind`); ConfigError says why not."""
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
    values = [plain(v) for v in values]
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


def plain(value: Any) -> Any:
    """Numbers written as 1e-3 become floats, inside lists and mappings too."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return _number_like(value)


def _clean(x: float) -> float:
    return float(f"{x:.12g}")


# --------------------------------------------------------------------------- names vs the config schema
