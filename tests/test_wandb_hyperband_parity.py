"""Our hyperband pruner stops exactly the runs W&B's sweep controller stops.

The same randomly generated sweeps (runs, their metric histories and states)
go to W&B's own ``sweeps.hyperband_stop_runs`` (package ``sweeps``, which pins
numpy<2 and so runs in its own ``uvx`` environment, one subprocess for all of
them) and to :class:`WandbHyperbandPruner` inside real Optuna studies, one
``pruner.prune(study, trial)`` per running trial. Both forms of the schedule
(``min_iter``; ``max_iter`` + ``s``), both goals, ``strict`` absent, true and
false, integer and fractional ``eta``, ties and NaN values.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
from collections import Counter
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from flexcnn.errors import ConfigError
from flexcnn.search.pruners import make_pruner
from flexcnn.search.wandb_hyperband import HyperbandRule, WandbHyperbandPruner, run_histories
from tests.helpers import uvx

CASES_PER_KIND = 250  # per form (min_iter, max_iter+s) and goal: 1,000 sweeps in all
STATES = {"running": TrialState.RUNNING, "finished": TrialState.COMPLETE, "failed": TrialState.FAIL}

W_AND_B = """
import json, math, sys, warnings
warnings.filterwarnings("ignore")
from sweeps import RunState, SweepRun
from sweeps.hyperband_stopping import hyperband_stop_runs
out = []
for case in json.load(sys.stdin):
    runs = [
        SweepRun(
            name=run["name"],
            state=RunState(run["state"]),
            history=[{case["metric"]: math.nan if v is None else v} for v in run["history"]],
        )
        for run in case["runs"]
    ]
    config = {
        "method": "random",
        "metric": {"name": case["metric"], "goal": case["goal"]},
        "early_terminate": case["early_terminate"],
        "parameters": {"x": {"values": [1, 2]}},
    }
    try:
        out.append(sorted(run.name for run in hyperband_stop_runs(runs, config)))
    except ValueError as exc:
        out.append({"error": str(exc)})
print(json.dumps(out))
"""


def _early_terminate(rng: random.Random, form: str) -> dict[str, Any]:
    eta = rng.choice([2, 3, 4, 1.5, 2.5])
    spec: dict[str, Any] = {"type": "hyperband", "eta": eta}
    if form == "min_iter":
        spec["min_iter"] = rng.randint(1, 4)
    else:
        spec["max_iter"] = rng.randint(1, 40)
        spec["s"] = rng.randint(1, 4)
    strict = rng.choice([None, True, False])
    if strict is not None:
        spec["strict"] = strict
    return spec


def _value(rng: random.Random, pool: list[float]) -> float | None:
    roll = rng.random()
    if roll < 0.03:
        return None  # NaN: W&B filters it out of the history before counting
    if roll < 0.35:
        return rng.choice(pool)  # ties between runs and within a run
    return round(rng.uniform(0.0, 1.0), 6)


def _case(rng: random.Random, form: str, goal: str) -> dict[str, Any]:
    pool = [round(rng.uniform(0.0, 1.0), 3) for _ in range(4)]
    runs = []
    for i in range(rng.randint(1, 10)):
        length = rng.choice([0, rng.randint(1, 6), rng.randint(1, 14), rng.randint(1, 30)])
        state = "running" if i == 0 else rng.choice(["running", "running", "finished", "failed"])
        runs.append({"name": f"r{i}", "state": state, "history": [_value(rng, pool) for _ in range(length)]})
    return {"metric": "val/acc", "goal": goal, "early_terminate": _early_terminate(rng, form), "runs": runs}


def _cases() -> list[dict[str, Any]]:
    rng = random.Random(20261201)
    return [
        _case(rng, form, goal)
        for form in ("min_iter", "max_iter")
        for goal in ("maximize", "minimize")
        for _ in range(CASES_PER_KIND)
    ]


def _wandb_decisions(cases: list[dict[str, Any]]) -> list[Any]:
    proc = subprocess.run(
        [*uvx(), "--from", "sweeps", "python", "-c", W_AND_B],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    assert proc.returncode == 0, f"sweeps package failed:\n{proc.stderr[-3000:]}"
    decisions = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(decisions) == len(cases)
    return decisions


def _our_decisions(case: dict[str, Any]) -> Any:
    """The runs our pruner stops, asked the way Optuna asks: ``prune(study, trial)`` for each running trial."""
    try:
        pruner = make_pruner("hyperband", case["early_terminate"], max_epochs=1)
    except ConfigError as exc:
        return {"error": str(exc)}
    study = optuna.create_study(direction=case["goal"], pruner=pruner)
    for run in case["runs"]:
        values = {step: math.nan if v is None else v for step, v in enumerate(run["history"], start=1)}
        done = run["state"] == "finished"
        trial = optuna.trial.create_trial(
            state=STATES[run["state"]],
            value=0.0 if done else None,  # the objective's value plays no part in the rule
            intermediate_values=values,
            user_attrs={"name": run["name"]},
        )
        study.add_trial(trial)
    running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    return sorted(t.user_attrs["name"] for t in running if pruner.prune(study, t))


@pytest.fixture(scope="module")
def decided() -> list[tuple[dict[str, Any], Any, Any]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cases = _cases()
    theirs = _wandb_decisions(cases)
    return [(case, their, _our_decisions(case)) for case, their in zip(cases, theirs, strict=True)]


@pytest.mark.parametrize("form", ["min_iter", "max_iter"])
@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_our_pruner_stops_what_wandb_stops(
    decided: list[tuple[dict[str, Any], Any, Any]], form: str, goal: str
) -> None:
    mine = [(c, t, o) for c, t, o in decided if c["goal"] == goal and form in c["early_terminate"]]
    assert len(mine) >= 200
    tally: Counter[str] = Counter()
    for case, theirs, ours in mine:
        if isinstance(theirs, dict):  # W&B refuses the schedule (no band): so do we
            assert isinstance(ours, dict), (case, theirs, ours)
            tally["refused"] += 1
            continue
        assert ours == theirs, json.dumps(case)
        running = [r["name"] for r in case["runs"] if r["state"] == "running"]
        tally["stopped"] += len(theirs)
        tally["kept"] += len(running) - len(theirs)
    # Not a vacuous agreement: plenty of runs stopped and plenty kept.
    assert tally["stopped"] >= 50 and tally["kept"] >= 50, tally
    if form == "max_iter":
        assert tally["refused"] > 0, "some max_iter/s/eta with no band at all"


def test_documented_examples_and_where_the_code_differs() -> None:
    # W&B's docs: min_iter 3 -> brackets [3, 9, 27, 81]; the code keeps going (100 bands).
    rule = HyperbandRule.from_spec({"type": "hyperband", "min_iter": 3})
    assert rule.bands[:4] == (3, 9, 27, 81) and len(rule.bands) == 100
    # max_iter 27, s 2 -> [27/eta, 27/eta/eta] = [9, 3], judged in ascending order.
    assert HyperbandRule.from_spec({"type": "hyperband", "max_iter": 27, "s": 2}).bands == (3, 9)
    # strict: the docs say false by default, the sweeps schema fills in true.
    assert rule.strict is True
    # Strict judges the value at the band; non-strict the best value so far.
    late_bloomer = [0.1, 0.9]  # maximize: worst at band 1, best by epoch 2
    others = [[0.5, 0.5], [0.6, 0.6], [0.7, 0.7]]
    strict = HyperbandRule.from_spec({"type": "hyperband", "min_iter": 1, "strict": True})
    lenient = HyperbandRule.from_spec({"type": "hyperband", "min_iter": 1, "strict": False})
    assert strict.stops(late_bloomer, [late_bloomer, *others], maximize=True)
    assert not lenient.stops(late_bloomer, [late_bloomer, *others], maximize=True)


def test_a_requeued_trial_is_one_run_with_its_predecessor() -> None:
    # The predecessor (interrupted, FAIL) logged epochs 1-2, its re-queued copy resumes the folder at epoch 3.
    study = optuna.create_study(direction="maximize", pruner=WandbHyperbandPruner({"min_iter": 1, "eta": 3}))
    folder = {"run_dir": "/runs/study/trial-0"}
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.FAIL, intermediate_values={1: 0.5, 2: 0.6}, user_attrs=folder)
    )
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values={3: 0.7}, user_attrs=folder)
    )
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.9, intermediate_values={1: 0.9}))
    current = study.get_trials(deepcopy=False)[1]
    own, histories = run_histories(study.get_trials(deepcopy=False), current)
    assert own == [0.5, 0.6, 0.7] and sorted(map(len, histories)) == [1, 3]  # two runs, not three
    # Band 3 reached: judged on its own three epochs; it is the only run there, so it stays.
    assert not study.pruner.prune(study, current)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "hyperband"}, "needs min_iter, or max_iter and s"),
        ({"type": "hyperband", "max_iter": 9}, "max_iter needs s"),
        ({"type": "hyperband", "max_iter": 2, "s": 1, "eta": 3}, "no band"),
        ({"type": "hyperband", "min_iter": 1, "eta": 1}, "eta must be a number above 1"),
        ({"type": "hyperband", "min_iter": 0}, "min_iter must be a positive integer"),
    ],
)
def test_schedules_wandb_refuses_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_pruner("hyperband", spec, max_epochs=5)
