"""A finished trial as a config file that ``flexcnn train`` reproduces.

Each trial stores its full resolved config (base config + parameters + seed +
threads) in the study, so the export needs only the storage, not the sweep
file or the base config it was made from. CPU results are reproducible for
the same config, seed and thread count; the export keeps all three.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from flexcnn.checkpoint import atomic_write_text
from flexcnn.config import RunConfig, dump_config, validate_config
from flexcnn.errors import UserError
from flexcnn.search.space import format_value

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def pick_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial:
    """Trial ``number``, or the best COMPLETE trial; UserError when there is none.

    A study of several objectives has no single best trial: ``number`` must name one (any
    trial; the message lists the Pareto front to choose from).
    """
    from optuna.trial import TrialState

    if number is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not matches:
            raise UserError(f"study {study.study_name!r} has no trial {number}")
        return matches[0]
    if len(study.directions) > 1:
        front = sorted(t.number for t in study.best_trials)
        listed = ", ".join(map(str, front)) if front else "none yet"
        raise UserError(
            f"study {study.study_name!r} has several objectives and no single best trial; "
            f"choose one with --trial N (Pareto front: trials {listed})"
        )
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not complete:
        raise UserError(f"study {study.study_name!r} has no completed trial yet")
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(complete, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))  # type: ignore[arg-type,return-value]


def trial_config(trial: FrozenTrial) -> RunConfig:
    """The config trial ``trial`` trained, ready for ``flexcnn train``."""
    stored = trial.user_attrs.get("config")
    if not isinstance(stored, dict):
        raise UserError(f"trial {trial.number} has no stored config (was it run by flexcnn optuna?)")
    config = validate_config(stored, source=f"trial {trial.number}'s config")
    config.logging.progress = True  # the trial ran without a progress bar; output only
    config.logging.run_name = None
    return config


def export_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """The exported YAML: a header that says where it came from, then the full config."""
    config = trial_config(trial)
    value = f"{trial.values[0]:.4f}" if trial.values else "-"
    names = study.metric_names if len(study.directions) > 1 else None
    if names and trial.values:
        value = ", ".join(f"{n} {v:.6g}" for n, v in zip(names, trial.values, strict=False))
    params = ", ".join(f"{k}={format_value(v)}" for k, v in (trial.user_attrs.get("params") or {}).items())
    epochs = trial.user_attrs.get("epochs")
    best = trial.user_attrs.get("best_epoch")
    header = [
        f"# Trial {trial.number} of Optuna study {study.study_name!r} ({trial.state.name}), "
        + (value if names else f"{config.train.monitor} {value}")
        + (f" at epoch {best} of {epochs}" if epochs else ""),
        f"# Parameters: {params}" if params else "# Parameters: (none)",
        f"# Seed {config.train.seed}, {config.train.threads or 'default'} CPU thread(s). "
        "Reproduce with: flexcnn train THIS_FILE",
    ]
    return "\n".join(header) + "\n" + dump_config(config)


def write_export(path: Path, study: optuna.Study, trial: FrozenTrial) -> None:
    """Write the trial's config YAML to ``path`` atomically."""
    atomic_write_text(Path(path), export_text(study, trial))
