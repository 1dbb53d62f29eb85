"""An exact trial budget across workers: a trial is claimed only while the budget has room.

A worker that counts "finished + running < budget" and then starts a trial
races every other worker doing the same: two that look at once both start the
last trial, and a study of 8 ends with 9. Here the count and the start (Optuna
pops a WAITING trial or creates a new one, RUNNING either way) happen together
under the storage's shared lock (:func:`flexcnn.search.storage.storage_lock`),
so once finished + running trials fill the budget, nobody else starts one; a
worker told so waits, in case one of the running trials fails. Nothing is
created and then taken back, so the study holds no FAIL or WAITING leftovers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from flexcnn.search.storage import storage_lock

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

# What fills the budget: trials that finished, and trials some worker is running now.
COUNTED = ("COMPLETE", "PRUNED", "RUNNING")


class BudgetFull(Exception):
    """Finished and running trials already fill the study's trial budget: start none now."""


def budgeted_study(study: optuna.Study, storage: BaseStorage, budget: int) -> optuna.Study:
    """``study`` (same storage object, sampler and pruner) whose ``ask`` claims a trial within ``budget``.

    ``study.optimize`` asks for each trial, so it raises :class:`BudgetFull`
    (before running anything) once the budget is taken. ``storage`` is the one
    :func:`~flexcnn.search.storage.open_storage` returned: it carries the lock.
    """
    claiming = _claiming_class()(study.study_name, storage, sampler=study.sampler, pruner=study.pruner)
    claiming.flexcnn_claim = (storage, budget)
    return claiming  # type: ignore[no-any-return]


def counted(study: optuna.Study) -> int:
    """Trials that take a place in the budget (finished or running), read from the storage now."""
    from optuna.trial import TrialState

    states = tuple(TrialState[name] for name in COUNTED)
    return len(study.get_trials(deepcopy=False, states=states))


@functools.cache
def _claiming_class() -> type:
    import optuna

    class ClaimingStudy(optuna.Study):
        """A Study whose ``ask`` counts and claims under the storage's lock (see the module docstring)."""

        flexcnn_claim: tuple[Any, int]

        def ask(self, fixed_distributions: Any = None) -> optuna.Trial:
            storage, budget = self.flexcnn_claim
            with storage_lock(storage, f"trials:{self.study_name}"):
                taken = counted(self)
                if taken >= budget:
                    raise BudgetFull(f"{taken} trials finished or running fill the budget of {budget}")
                return super().ask(fixed_distributions)

    return ClaimingStudy
