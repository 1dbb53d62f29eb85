"""W&B's ``early_terminate: hyperband`` rule as an Optuna pruner, so one sweep file prunes alike in both engines.

The rule is the one W&B's sweep controller runs (``sweeps.hyperband_stop_runs``,
package ``sweeps`` 0.3.0), not Optuna's multi-bracket ``HyperbandPruner``:

* **Bands** (W&B's docs call them brackets) are numbers of logged metric values:
  ``min_iter * eta**k`` for k = 0..99 (each truncated to an int), or, with
  ``max_iter`` and ``s``, ``max_iter / eta**k`` for k = 1..s (truncated, stopping
  below 1, sorted). ``max_iter`` wins when both forms are given.
* **Threshold** of a band: the values of every run that logged at least that many
  values, each taken at that band, sorted best first; the one at position
  ``int(len / eta)``. Every run counts: finished, failed, pruned and running,
  the run being judged included.
* **Decision** for a running run with ``n`` values: the largest band ``<= n``
  applies (so a run is judged between bands too). The run stops when its value
  is worse than that band's threshold (strictly): with ``strict`` (W&B's default,
  see below) its value at the band; otherwise the best value it has logged so far.

Where W&B's documentation differs from its code, we follow the code, because it
is what a W&B sweep does: ``strict`` is documented as "defaults to false", but
the schema the code fills in defaults it to ``true``; the documented ``min_iter``
example lists four brackets, the code makes 100; the docs say runs are compared
"when a run reaches a bracket", the code judges every running run at every poll
against the last band it passed. Non-finite values are dropped before counting,
as ``metric_history(filter_invalid=True)`` does.

One Optuna step is one logged value (one epoch, see ``reporters.optuna``). A
re-queued trial that resumes its predecessor's run folder is one W&B run: trials
sharing a ``run_dir`` user attribute are merged into one history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.pruners import BasePruner

from flexcnn.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

DEFAULT_ETA = 3
MIN_ITER_BANDS = 100  # what sweeps.hyperband_stop_runs makes for the min_iter form


@dataclass(frozen=True)
class HyperbandRule:
    """W&B's hyperband schedule: the bands, the kept fraction ``1/eta`` and the strict flag."""

    bands: tuple[int, ...]
    eta: float
    strict: bool = True

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> HyperbandRule:
        """The rule for an ``early_terminate`` mapping; no mapping means W&B's defaults (min_iter 1, eta 3)."""
        spec = dict(spec or {"min_iter": 1})
        eta = spec.get("eta", DEFAULT_ETA)
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 1:
            raise ConfigError(f"early_terminate.eta must be a number above 1, got {eta!r}")
        strict = spec.get("strict", True)  # the sweeps schema's default, whatever the docs say
        if "max_iter" in spec:
            bands = _max_iter_bands(spec, eta)
        elif "min_iter" in spec:
            bands = _min_iter_bands(spec["min_iter"], eta)
        else:
            raise ConfigError("early_terminate: hyperband needs min_iter, or max_iter and s")
        if not bands:
            raise ConfigError(
                f"early_terminate: max_iter {spec['max_iter']} / eta {eta} is below 1, so there is no band "
                "to stop runs at; raise max_iter or lower eta or s"
            )
        return cls(tuple(bands), float(eta), bool(strict))

    def stops(self, running: Sequence[float], histories: Sequence[Sequence[float]], *, maximize: bool) -> bool:
        """Whether the running run with history ``running`` stops, given every run's history (its own included).

        Histories are the metric's logged values in order, non-finite ones already dropped.
        """
        sign = -1.0 if maximize else 1.0  # lower is better below, as in sweeps
        own = [sign * v for v in running]
        band_index = -1
        for i, band in enumerate(self.bands):
            if band > len(own):
                break
            band_index = i
        if band_index < 0:
            return False  # no band reached yet
        band = self.bands[band_index]
        at_band = sorted(sign * h[band - 1] for h in histories if len(h) >= band)
        threshold = at_band[int(1.0 / self.eta * len(at_band))]
        condition = own[band - 1] if self.strict else min(own)
        return condition > threshold


def _int_spec(spec: Mapping[str, Any], key: str) -> int:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"early_terminate.{key} must be a positive integer, got {value!r}")
    return value


def _max_iter_bands(spec: Mapping[str, Any], eta: float) -> list[int]:
    max_iter = _int_spec(spec, "max_iter")
    if "s" not in spec:
        raise ConfigError("early_terminate: max_iter needs s (the number of bands)")
    s = _int_spec(spec, "s")
    bands: list[int] = []
    band: float = max_iter
    for _ in range(s):
        band /= eta
        if band < 1:
            break
        bands.append(int(band))
    return sorted(bands)


def _min_iter_bands(min_iter: Any, eta: float) -> list[int]:
    band: float = _int_spec({"min_iter": min_iter}, "min_iter")
    bands = []
    for _ in range(MIN_ITER_BANDS):
        bands.append(int(band))
        band *= eta
    return bands


def finite_history(values: Mapping[int, float]) -> list[float]:
    """Reported values in step order, non-finite ones dropped (W&B's ``filter_invalid``)."""
    return [float(values[step]) for step in sorted(values) if math.isfinite(values[step])]


def run_histories(trials: Sequence[FrozenTrial], current: FrozenTrial) -> tuple[list[float], list[list[float]]]:
    """The current trial's history and every run's, trials that continue one run folder merged into one."""
    merged: dict[object, dict[int, float]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        merged.setdefault(_run_key(trial), {}).update(trial.intermediate_values)
    merged.setdefault(_run_key(current), {}).update(current.intermediate_values)
    histories = [h for h in map(finite_history, merged.values()) if h]
    return finite_history(merged[_run_key(current)]), histories


def _run_key(trial: FrozenTrial) -> object:
    run_dir = trial.user_attrs.get("run_dir")
    return ("run_dir", run_dir) if run_dir else ("trial", trial.number)


class WandbHyperbandPruner(BasePruner):
    """Prunes a trial exactly when W&B's sweep controller would stop the same run (see the module docstring)."""

    def __init__(self, early_terminate: Mapping[str, Any] | None = None) -> None:
        self.rule = HyperbandRule.from_spec(early_terminate)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Called by ``trial.should_prune()`` after each report."""
        import optuna

        own, histories = run_histories(study.get_trials(deepcopy=False), trial)
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return self.rule.stops(own, histories, maximize=maximize)
