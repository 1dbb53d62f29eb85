"""Optuna studies driven by W&B sweep YAMLs.

One sweep file drives both engines: ``wandb sweep`` reads it as-is, and this
package translates its ``parameters``, ``method``, ``metric`` and
``early_terminate`` into Optuna distributions, a sampler and a pruner.

Modules, one job each: ``sweep_file`` (read and check a sweep YAML, find its
base config), ``space`` (W&B parameters <-> Optuna distributions and dotted
config overrides), ``samplers``, ``pruners``, ``storage`` (journal file,
SQLite, PostgreSQL), ``study`` (create/load a study, its stored settings and
leaderboard), ``objective`` (one trial = one ``run()``), ``workers`` (the
trial loop and the process fan-out) and ``export`` (a trial as a config file).
Optuna itself is imported only by the modules that need it.
"""
