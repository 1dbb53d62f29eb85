"""W&B's own sweep engine behind JSON lines on stdin/stdout; runs inside ``uvx --from sweeps``.

The ``sweeps`` package pins numpy<2, so it cannot be imported into flexcnn's environment; this
file imports nothing from the repository. One process serves many simulated sweeps in a row
(``init`` resets), so a few hundred seeds pay the interpreter's start-up once.

Requests and replies, one JSON object per line:

    {"op": "init", "sweep": {...}, "seed": 3}        -> {"ok": true}
    {"op": "ask"}                                    -> {"id": "r0", "config": {"optim.lr": 0.0003, ...}}
    {"op": "log", "id": "r0", "value": 0.91}         -> {"stop": ["r4"]}   (hyperband: runs to stop now)
    {"op": "end", "id": "r0", "state": "finished"}   -> {"ok": true}        (or "killed" when stopped)

Each ``ask`` is ``sweeps.next_run(sweep, runs)`` with every run so far, the running ones with
the history logged so far, as the W&B server calls it when an agent asks for work; each ``log``
appends one epoch's metric to the run's history and, when the sweep has ``early_terminate``,
calls ``sweeps.stop_runs(sweep, runs)`` at once (the hosted controller polls every few minutes,
so real W&B stops later than this). Stopped runs end as ``killed``, which is how W&B records a
run its agent terminated; ``bayes`` then imputes the worst metric for them (its default).
"""

from __future__ import annotations

import json
import os
import random
import sys
import warnings


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # sweeps prints diagnostics; only replies go to the protocol stream
    warnings.filterwarnings("ignore")
    import numpy as np

    import sweeps
    from sweeps import RunState, SweepRun

    sweep: dict = {}
    runs: list[SweepRun] = []
    by_name: dict[str, SweepRun] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg["op"]
        if op == "init":
            sweep, runs, by_name = msg["sweep"], [], {}
            random.seed(msg["seed"])
            np.random.seed(msg["seed"])  # random and bayes draw from numpy's global stream
            reply: dict = {"ok": True}
        elif op == "ask":
            suggested = sweeps.next_run(sweep, runs, validate=False)
            run = SweepRun(name=f"r{len(runs)}", state=RunState.running, config=suggested.config, history=[])
            runs.append(run)
            by_name[run.name] = run
            reply = {"id": run.name, "config": {k: v["value"] for k, v in suggested.config.items()}}
        elif op == "log":
            by_name[msg["id"]].history.append({sweep["metric"]["name"]: msg["value"]})
            stop = sweeps.stop_runs(sweep, runs, validate=False) if sweep.get("early_terminate") else []
            for run in stop:
                run.state = RunState.killed
            reply = {"stop": [run.name for run in stop]}
        elif op == "end":
            run = by_name[msg["id"]]
            if run.state == RunState.running:
                run.state = RunState(msg["state"])
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown op {op!r}"}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
