"""The searched space of sweeps/flexcnn.yaml and the fixed settings of one benchmark trial.

The space is read from the sweep file with flexcnn's own translation (``build_space``), so the
generator, the simulator's samplers and flexcnn's study runner agree on names, choices and the
JSON encoding of list-valued choices (``model.num_filters``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution

from flexcnn.search.space import SearchSpace, build_space
from flexcnn.search.sweep_file import SweepSpec, load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[2]
SWEEP_FILE = REPO / "sweeps" / "flexcnn.yaml"
EPOCHS = 6  # as in the live runs; onecycle anneals over these 6 epochs
# 1,000 of mnist5k's 4,000 training images: a trial takes 5-30 CPU seconds, and the final val/acc
# still spreads from chance (lr 1e-5) to 0.97 (see the README's figures), so configurations differ.
LIMIT = 1000
# Fixed in every benchmark trial, on top of the sweep's base config (configs/mnist5k.yaml).
FIXED: dict[str, Any] = {
    "train.epochs": EPOCHS,
    "data.limit": LIMIT,
    "train.threads": 1,  # one core per trial: simulated workers each own a core
    "logging.progress": False,
    "logging.wandb.mode": "disabled",
}


def sweep_raw() -> dict[str, Any]:
    """sweeps/flexcnn.yaml as a dict, with the base config's path made absolute (any working folder)."""
    raw = copy.deepcopy(load_sweep(SWEEP_FILE).raw)
    raw["command"] = [
        str(REPO / c) if isinstance(c, str) and c.endswith((".yaml", ".yml")) and not Path(c).is_absolute() else c
        for c in raw["command"]
    ]
    return raw


def bench_sweep() -> SweepSpec:
    """The sweep as a benchmark trial runs it: the file's parameters plus FIXED as constants."""
    raw = sweep_raw()
    raw["parameters"] = {**raw["parameters"], **{k: {"value": v} for k, v in FIXED.items() if k != "logging.progress"}}
    return parse_sweep(raw, SWEEP_FILE)


def search_space() -> SearchSpace:
    """The searched parameters of sweeps/flexcnn.yaml (constants excluded)."""
    return build_space(load_sweep(SWEEP_FILE).parameters)


def draw(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn uniformly: each categorical uniform, each log-float log-uniform.

    Values are as Optuna stores them (lists JSON-encoded), so ``space.decode`` gives config values.
    """
    raw: dict[str, Any] = {}
    for p in space.params:
        dist = p.distribution
        if isinstance(dist, CategoricalDistribution):
            raw[p.name] = dist.choices[int(rng.integers(len(dist.choices)))]
        elif isinstance(dist, FloatDistribution) and dist.log:
            raw[p.name] = float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
        elif isinstance(dist, FloatDistribution):
            raw[p.name] = float(rng.uniform(dist.low, dist.high))
        else:
            raise ValueError(f"{p.name}: the benchmark draws categoricals and floats only, got {dist!r}")
    return raw


def grid_size(space: SearchSpace) -> int:
    """Categorical combinations (the continuous parameters not counted)."""
    return math.prod(len(p.distribution.choices) for p in space.params if hasattr(p.distribution, "choices"))
