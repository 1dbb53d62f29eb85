"""The Optuna sampler for a sweep: from its ``method``, or named on the command line.

``grid`` -> GridSampler over the sweep's discrete values; ``random`` ->
RandomSampler; ``bayes`` -> multivariate TPE with ``constant_liar`` so that
parallel workers do not all pick the point that looks best right now.
``--sampler`` overrides: tpe, gp, cmaes, random, qmc, grid, nsga2. A study of
several objectives uses NSGA-II for ``bayes`` (see flexcnn.search.objectives).
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING

from flexcnn.errors import ConfigError, UserError

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from flexcnn.search.space import SearchSpace

# The --sampler choices. This module imports neither optuna nor the config schema at load
# time, so the CLI builds its option from this tuple and `flexcnn --help` stays fast.
SAMPLERS = ("tpe", "gp", "cmaes", "random", "qmc", "grid", "nsga2")
METHOD_SAMPLER = {"grid": "grid", "random": "random", "bayes": "tpe"}
# Samplers whose choices depend on the trial number, not on a random stream:
# every worker must hold the same seed, or workers would disagree on the grid order.
SHARED_SEED = 0

# Extra packages a sampler needs beyond optuna itself, and why.
_NEEDS = {"gp": ("scipy", "torch"), "cmaes": ("cmaes",), "qmc": ("scipy",)}


def sampler_name(method: str, override: str | None = None) -> str:
    """The sampler a sweep uses: ``override`` when given, else the one its method maps to."""
    if override is not None:
        if override not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {override!r}")
        return override
    return METHOD_SAMPLER[method]


def worker_seed(seed: int, worker_index: int) -> int:
    """Worker ``worker_index``'s sampler seed: the k-th child of ``numpy.random.SeedSequence(seed)``.

    ``seed + worker_index`` made streams collide across studies: seed 1's worker 1 drew
    exactly what seed 2's worker 0 drew. Spawned children are independent of each other and of
    every other study seed's children (NumPy's guarantee for ``SeedSequence.spawn``), and the
    same (seed, worker) always gives the same stream.
    """
    import numpy as np

    # SeedSequence(seed, spawn_key=(k,)) is SeedSequence(seed).spawn(k + 1)[k], without the k siblings.
    child = np.random.SeedSequence(seed, spawn_key=(worker_index,))
    return int(child.generate_state(1, dtype=np.uint32)[0])


def startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the space: about a quarter of the budget, 3 to 10."""
    return max(3, min(10, n_trials // 4))


def population_size(n_trials: int) -> int:
    """NSGA-II's generation: a quarter of the budget, 4 to 50 (Optuna's default 50 would make any
    study under 50 trials a random search)."""
    return max(4, min(50, n_trials // 4))


def make_sampler(
    name: str, space: SearchSpace, *, seed: int | None = None, worker_index: int = 0, n_trials: int = 40
) -> BaseSampler:
    """Build sampler ``name`` for ``space``; UserError when it needs a package that is missing.

    Random-stream samplers get :func:`worker_seed` (``seed``, ``worker_index``), so that
    seeded workers do not draw the same sequence; grid and QMC pick points by trial
    number and need the same seed in every worker.
    """
    import optuna

    missing = [pkg for pkg in _NEEDS.get(name, ()) if importlib.util.find_spec(pkg) is None]
    if missing:
        raise UserError(
            f"--sampler {name} needs the package(s) {', '.join(missing)}, which are not installed; "
            f"install them (uv add {' '.join(missing)}) or choose another sampler ({', '.join(SAMPLERS)})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # GP, QMC: stable enough here
        return _build(name, space, seed, worker_index, n_trials)


def _build(name: str, space: SearchSpace, seed: int | None, worker_index: int, n_trials: int) -> BaseSampler:
    import optuna

    shared = SHARED_SEED if seed is None else seed
    if seed is not None:
        seed = worker_seed(seed, worker_index)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=shared)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            multivariate=True, constant_liar=True, seed=seed, n_startup_trials=startup_trials(n_trials)
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials(n_trials))
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup_trials(n_trials))
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=shared, scramble=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size(n_trials), seed=seed)
    raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
