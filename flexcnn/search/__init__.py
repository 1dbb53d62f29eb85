"""Optuna studies driven by W&B sweep YAMLs.

One sweep file drives both engines: ``wandb sweep`` reads it as-is, and this
package translates its ``parameters``, ``method``, ``metric`` and
``early_terminate`` into Optuna distributions, a sampler and a pruner.

Modules, one job each: ``sweep_file`` (read and check a sweep YAML, find its
base config), ``params`` (one W&B parameter spec <-> an Optuna distribution),
``space`` (a sweep's parameters as a search space, checked against the
config schema), ``samplers``, ``pruners``, ``storage`` (journal file, SQLite,
PostgreSQL), ``study`` (create/load a study, its stored settings and
leaderboard), ``objective`` (one trial = one ``run()``), ``workers`` (one
process's trial loop), ``reaping`` (trials whose worker died), ``fanout``
(K worker processes under :mod:`flexcnn.processes`), ``worker_argv`` (the
``flexcnn optuna worker`` command line), ``say`` (progress lines) and
``export`` (a trial as a config file).
Optuna itself is imported only by the modules that need it.
"""
