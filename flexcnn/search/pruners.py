"""The Optuna pruner for a sweep: from ``--pruner``, its ``controller.pruner``, or its ``early_terminate``.

W&B's ``early_terminate: {type: hyperband, ...}`` becomes ``hyperband``: W&B's own
rule (:class:`~flexcnn.search.wandb_hyperband.WandbHyperbandPruner`), so a sweep
file stops the same runs under both engines. One iteration is one epoch: the
pruning reporter reports the metric at step ``epoch`` (1-based), as W&B counts
the metric's logged values.
``controller.pruner`` (a key W&B's schema allows and W&B ignores) names the pruner of the
Optuna path, and ``--pruner`` overrides both: hyperband (W&B's rule), optuna-hyperband
(Optuna's multi-bracket HyperbandPruner(min_iter, max_iter or the trial's epochs, eta)),
asha, median, percentile, successive_halving, none.

``asha`` is asynchronous successive halving from the first epoch with Optuna's reduction
factor 4, whatever ``early_terminate`` says: the fastest rule to the target on the benchmark of
sweeps/flexcnn.yaml's space (bench/searchsim: with TPE, 1.2-1.8x sooner than TPE with W&B's
rule from the sweep file, at 2 and 8 workers, median and p90), so the shipped from-scratch
sweeps name it in ``controller.pruner``. It is never what ``early_terminate: hyperband``
means, because it is not W&B's rule: W&B agents of the same file stop the runs W&B would stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flexcnn.errors import ConfigError

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

PRUNERS = ("hyperband", "optuna-hyperband", "asha", "median", "percentile", "successive_halving", "none")
DEFAULT_ETA = 3
ASHA_ETA = 4  # Optuna's SuccessiveHalvingPruner default; eta 3 measured no better (bench/searchsim)


def pruner_name(
    early_terminate: Mapping[str, Any] | None, override: str | None = None, controller: str | None = None
) -> str:
    """``override`` (``--pruner``) when given, else the sweep's ``controller.pruner``, else hyperband
    when the sweep's ``early_terminate`` asks for it, else none."""
    if override is not None:
        if override not in PRUNERS:
            raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {override!r}")
        return override
    if controller is not None:
        return controller
    return "hyperband" if early_terminate else "none"


def min_epochs(early_terminate: Mapping[str, Any] | None) -> int:
    """Epochs every trial runs before it can be pruned: ``min_iter``, or ``max_iter / eta**s``."""
    spec = early_terminate or {}
    if "min_iter" in spec:
        return int(spec["min_iter"])
    if "max_iter" in spec and "s" in spec:
        return max(1, round(spec["max_iter"] / spec.get("eta", DEFAULT_ETA) ** spec["s"]))
    return 1


def make_pruner(name: str, early_terminate: Mapping[str, Any] | None, *, max_epochs: int) -> BasePruner:
    """Build pruner ``name``; ``max_epochs`` is the longest a trial can train (hyperband's max resource)."""
    import optuna

    spec = early_terminate or {}
    eta = int(spec.get("eta", DEFAULT_ETA))
    low = min_epochs(spec)
    high = int(spec.get("max_iter", max_epochs))
    if name == "hyperband":
        from flexcnn.search.wandb_hyperband import WandbHyperbandPruner

        return WandbHyperbandPruner(spec or None)
    if name == "optuna-hyperband":
        if low >= high:
            raise ConfigError(
                f"early_terminate: min_iter ({low}) must be below max_iter / the epochs of a trial ({high}), "
                "or nothing can be pruned"
            )
        return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high, reduction_factor=eta)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ASHA_ETA)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=low, reduction_factor=eta)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=low - 1)
    if name == "percentile":
        # Keep the top quarter: stricter than the median, still safe after a few trials.
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=low - 1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
