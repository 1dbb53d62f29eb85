"""The search strategies compared on the benchmark, each a recipe for an engine per (seed, K).

Any Optuna sampler and pruner plug in through ``optuna_strategy``; a sweep file's own choices
(flexcnn's ``make_sampler``/``make_pruner``, whatever they build at the time) through
``flexcnn_strategy``, so a later change of flexcnn's defaults is measured by the same code.

Seeds: every strategy gives worker ``k`` of seed ``s`` the k-th child of ``SeedSequence(s)``,
so no two workers, and no two seeds, share a random stream. For the flexcnn strategies that is
what ``flexcnn optuna run --seed s`` does itself (flexcnn.search.samplers.worker_seed); before,
its worker k sampled with ``s + k``, which would have correlated neighbouring seeds and made
200 seeds count for fewer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.searchsim.engines import Engine, OptunaEngine, WandbBridge, WandbEngine
from bench.searchsim.space import EPOCHS, bench_sweep, search_space, sweep_raw
from flexcnn.search.samplers import worker_seed

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str  # a short description for the table
    spec: str  # what defines it, hashed into the cache key: change it and the cache recomputes
    build: Callable[[int, int, Any], Engine]  # (seed, workers, context) -> engine
    wandb: bool = False  # needs the W&B bridge (the context)

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.spec}".encode()).hexdigest()[:12]


def worker_seeds(seed: int, workers: int) -> list[int]:
    """One independent 32-bit seed per worker, from one SeedSequence per study seed (as flexcnn's workers)."""
    return [worker_seed(seed, k) for k in range(workers)]


def optuna_strategy(
    name: str,
    label: str,
    sampler: Callable[[int], BaseSampler],
    pruner: Callable[[], BasePruner],
    spec: str,
) -> Strategy:
    """``sampler(seed)`` and ``pruner()`` build one worker's objects; ``spec`` names them for the cache."""

    def build(seed: int, workers: int, _: Any) -> Engine:
        seeds = worker_seeds(seed, workers)
        return OptunaEngine(search_space(), workers, lambda w: sampler(seeds[w]), lambda w: pruner())

    return Strategy(name, label, spec, build)


def flexcnn_strategy(
    name: str,
    label: str,
    sampler: str | None = None,
    pruner: str | None = None,
    *,
    pruner_factory: Callable[[], BasePruner] | None = None,
) -> Strategy:
    """What ``flexcnn optuna run sweeps/flexcnn.yaml --seed S [--sampler S] [--pruner P]`` builds (plan_study).

    ``pruner_factory`` replaces the pruner with any Optuna pruner (a candidate default).
    """
    from flexcnn.search.study import plan_study

    plan = plan_study(bench_sweep(), sampler=sampler, pruner=pruner)
    make_pruner = pruner_factory or plan.pruner
    # The built objects' reprs carry their parameters (TPE's startup trials, hyperband's bounds):
    # if flexcnn's defaults change, the cache key changes with them.
    spec = f"{plan.settings.sampler}/{plan.settings.pruner}/{plan.settings.n_trials}/{plan.sweep.early_terminate}"
    spec += "|" + _describe(plan.sampler(seed=0)) + "|" + _describe(make_pruner()) + "|seeds=SeedSequence.spawn"

    def build(seed: int, workers: int, _: Any) -> Engine:
        # Worker w's sampler as `flexcnn optuna worker --seed seed --worker-index w` builds it.
        return OptunaEngine(
            plan.space, workers, lambda w: plan.sampler(seed=seed, worker_index=w), lambda w: make_pruner()
        )

    return Strategy(name, label, spec, build)


def _describe(obj: Any) -> str:
    """A class name and its public-ish settings, stable across runs (no addresses, no RNG state)."""
    fields = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_rng") and _plain(v)}
    text = f"{type(obj).__name__}{json.dumps(fields, sort_keys=True, default=str)}"
    if hasattr(obj, "rule"):  # flexcnn's W&B hyperband pruner: its brackets live in a dataclass
        text += repr(obj.rule)
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # a function's repr names its address


def _plain(v: Any) -> bool:
    return isinstance(v, int | float | str | bool | type(None) | tuple | list)


def wandb_strategy(name: str, label: str, method: str, hyperband: bool) -> Strategy:
    """W&B's engine on the sweep file's parameters, with its ``early_terminate`` when ``hyperband``."""
    raw = sweep_raw()
    sweep: dict[str, Any] = {
        "method": method,
        "metric": copy.deepcopy(raw["metric"]),
        "parameters": copy.deepcopy(raw["parameters"]),
    }
    if hyperband:
        sweep["early_terminate"] = copy.deepcopy(raw["early_terminate"])
    spec = json.dumps(sweep, sort_keys=True)

    def build(seed: int, workers: int, bridge: WandbBridge) -> Engine:
        return WandbEngine(bridge, sweep, search_space(), seed)

    return Strategy(name, label, spec, build, wandb=True)


def strategies() -> list[Strategy]:
    """Every strategy of the comparison, the baseline first."""
    import optuna

    def tpe(seed: int) -> BaseSampler:
        return optuna.samplers.TPESampler(seed=seed)

    def rnd(seed: int) -> BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def nop() -> BasePruner:
        return optuna.pruners.NopPruner()

    def hyperband() -> BasePruner:
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS, reduction_factor=3)

    def sha() -> BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)  # reduction factor 4, Optuna's default

    return [
        optuna_strategy("random", "random, no pruning (hand-written loop)", rnd, nop, "RandomSampler|Nop"),
        wandb_strategy("wandb-random", "W&B random", "random", hyperband=False),
        wandb_strategy("wandb-random-hb", "W&B random + hyperband", "random", hyperband=True),
        wandb_strategy("wandb-bayes", "W&B bayes", "bayes", hyperband=False),
        wandb_strategy("wandb-bayes-hb", "W&B bayes + hyperband (the sweep file)", "bayes", hyperband=True),
        optuna_strategy("tpe", "Optuna TPE (multivariate, constant liar)", tpe, nop, "TPE()|Nop"),
        optuna_strategy("tpe-hb", "Optuna TPE + Hyperband(1, 6, 3)", tpe, hyperband, "TPE()|Hyperband(1,6,3)"),
        optuna_strategy("tpe-sha", "Optuna TPE + SuccessiveHalving(1, 4)", tpe, sha, "TPE()|SHA(1,4)"),
        optuna_strategy("random-sha", "Optuna random + SuccessiveHalving = ASHA", rnd, sha, "Random|SHA(1,4)"),
        flexcnn_strategy("flexcnn", "flexcnn default: optuna run sweeps/flexcnn.yaml (TPE + asha)"),
        flexcnn_strategy("flexcnn-wandb-rule", "flexcnn --pruner hyperband (TPE + W&B's rule)", pruner="hyperband"),
    ]


def candidates() -> list[Strategy]:
    """Possible new defaults for the Optuna path: flexcnn's sampler with other pruners, workers seeded
    from one SeedSequence; replayed after the comparison. (flexcnn's sampler without pruning, or with
    Hyperband(1, 6, 3), is ``tpe`` / ``tpe-hb`` above: Optuna 5's TPE defaults are flexcnn's,
    multivariate with the constant liar and 10 start-up trials.)"""
    import optuna

    return [
        flexcnn_strategy(
            "cand-sha3",
            "candidate: TPE + SuccessiveHalving(1, 3)",
            pruner_factory=lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        ),
        flexcnn_strategy(
            "cand-median",
            "candidate: TPE + Median(5 trials, from epoch 2)",
            pruner_factory=lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        ),
    ]


def registry() -> dict[str, Strategy]:
    """Every strategy by name: the comparison, then the candidates."""
    return {s.name: s for s in [*strategies(), *candidates()]}
