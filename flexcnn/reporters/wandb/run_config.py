"""The config a W&B run records: each hyperparameter under one key, and the W&B mode really used.

Under ``wandb agent``, wandb.init merges the sweep's parameters into the run's
config from the file ``WANDB_SWEEP_PARAM_PATH`` names, under the sweep's own
names. A nested ``parameters:`` block (``model: {activation: ...}``) is merged
into our nested ``model`` section, so it shows once. A dotted name
(``data.batch_size``) is a top-level key of its own, which the UI shows next to
our nested ``data.batch_size``: two columns for one hyperparameter. The sweep
controller reads its parameters back by its names (bayes search needs them), so
the dotted keys stay and our nested copy of those leaves goes.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# What wandb writes into a sweep's parameter file besides the parameters.
_BOOKKEEPING = ("wandb_version", "_wandb")


def sweep_parameter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """The names of the parameters ``wandb agent`` hands this run (empty when not under an agent)."""
    env = os.environ if env is None else env
    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if not env.get("WANDB_SWEEP_ID") or not path:
        return []
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # wandb.init reads the same file and reports what is wrong with it
    return [str(k) for k in data if k not in _BOOKKEEPING] if isinstance(data, dict) else []


def run_config(resolved: Mapping[str, Any], *, mode: str, swept: Iterable[str] = ()) -> dict[str, Any]:
    """``resolved`` (the run's nested config) as W&B should record it.

    ``logging.wandb.mode`` is the mode the run logs in (``auto`` or the default
    ``disabled`` says nothing about it), and every dotted sweep parameter is left
    out of the nested sections, so it shows once, under the sweep's own key.
    """
    out = copy.deepcopy(dict(resolved))
    wandb_section = out.get("logging", {}).get("wandb")
    if isinstance(wandb_section, dict):
        wandb_section["mode"] = mode
    for name in swept:
        if "." in name:
            _drop_leaf(out, name.split("."))
    return out


def _drop_leaf(tree: dict[str, Any], path: list[str]) -> None:
    """Remove ``tree[a][b]...`` and the sections it leaves empty; nothing when the path is not there."""
    head, rest = path[0], path[1:]
    if head not in tree:
        return
    if not rest:
        del tree[head]
        return
    child = tree[head]
    if isinstance(child, dict):
        _drop_leaf(child, rest)
        if not child:
            del tree[head]
