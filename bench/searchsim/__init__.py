"""A learning-curve benchmark of flexcnn's own search space, and a simulator that replays sweeps on it.

* ``space``: the searched space (sweeps/flexcnn.yaml) and the fixed settings of a benchmark trial.
* ``generate``: measures real learning curves through ``flexcnn.run.run`` (resumable, append-only).
* ``data``: reads the packed curves (bench/data/mnist5k-curves.jsonl.gz).
* ``surrogate``: answers any configuration of the space with a measured curve and its CPU seconds.
* ``engines``: Optuna samplers/pruners and W&B's ``sweeps`` engine behind one small protocol.
* ``simulator``: K workers, an event queue of epoch ends, simulated (CPU-second) time.
* ``report``: time to target and best value at fixed budgets, per strategy, as a table.
"""
