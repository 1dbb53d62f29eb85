"""Read a W&B sweep YAML, check it, and find the base config its command trains.

The file uses W&B's own keys only, so ``wandb sweep`` accepts it unchanged.
Our side needs three things from it besides the search space: the metric (one
of the keys run() logs per epoch), the search method, and the base config,
which is the first ``*.yaml``/``*.yml`` argument after ``train`` in
``command`` (resolved against the working folder, then the sweep's folder and
the folders above it up to the repository root).
``--set KEY=VALUE`` pairs in the command are kept as fixed overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flexcnn.config import read_yaml
from flexcnn.errors import ConfigError
from flexcnn.search.objectives import METRICS, ObjectiveSpec, sweep_objectives
from flexcnn.search.pruners import PRUNERS

SWEEP_KEYS = (
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    "name",
    "description",
    "project",
    "entity",
    "controller",
)
METHODS = ("grid", "random", "bayes")
EARLY_TERMINATE_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file: what to search, how, and for which metric."""

    path: Path | None
    raw: dict[str, Any]
    method: str
    metric: str
    direction: Direction
    parameters: dict[str, Any]
    target: float | None = None
    early_terminate: dict[str, Any] | None = None
    run_cap: int | None = None
    name: str | None = None
    base_config: Path | None = None
    fixed_overrides: list[str] = field(default_factory=list)
    # metric first, then controller.objectives: what an Optuna study optimises (W&B reads only metric)
    objectives: tuple[ObjectiveSpec, ...] = ()
    # controller.pruner: the Optuna path's pruner; W&B agents apply early_terminate instead
    pruner: str | None = None

    @property
    def default_study_name(self) -> str:
        """The sweep's ``name``, else the file's stem."""
        if self.name:
            return self.name
        return self.path.stem if self.path is not None else "flexcnn-study"


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and check the sweep YAML at ``path``; raise ConfigError naming what is wrong."""
    path = Path(path)
    raw = read_yaml(path, what="sweep file")
    return parse_sweep(raw, path)


def parse_sweep(raw: Any, path: Path | None = None) -> SweepSpec:
    """Check a sweep dict (as read from YAML) and return its parts."""
    where = f"sweep file {path}" if path is not None else "sweep"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping of W&B sweep keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if "metrics" in unknown:
        raise ConfigError(
            f"{where}: W&B's `metrics` list needs W&B Launch's custom scheduler (method: custom); keep `metric` "
            "and list the other objectives under controller.objectives (see README: Multi-objective studies)"
        )
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected W&B sweep keys: {', '.join(SWEEP_KEYS)}"
        )

    method = raw.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}, got {method!r}")

    metric, direction, target = _metric(raw.get("metric"), where)
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{where}: 'parameters' must be a non-empty mapping of parameter name -> spec")

    early = raw.get("early_terminate")
    if early is not None:
        early = _early_terminate(early, where)

    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise ConfigError(f"{where}: run_cap must be a positive integer, got {run_cap!r}")

    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: name must be a string, got {name!r}")

    controller = _controller(raw.get("controller"), where)
    objectives = sweep_objectives(metric, direction, controller.get("objectives"), where)
    base, fixed = _base_config(raw.get("command"), path, where)
    return SweepSpec(
        path=path,
        raw=raw,
        method=method,
        metric=metric,
        direction=direction,
        parameters=parameters,
        target=target,
        early_terminate=early,
        run_cap=run_cap,
        name=name,
        base_config=base,
        fixed_overrides=fixed,
        objectives=objectives,
        pruner=_controller_pruner(controller, where),
    )


def _controller(spec: Any, where: str) -> dict[str, Any]:
    """``controller``: W&B's schema lets it carry keys it does not know and W&B's own sweep ignores
    them, so the Optuna path's own settings (``objectives``, ``pruner``) live there; its ``type``
    (local or cloud) stays W&B's business."""
    if spec is None:
        return {}
    if not isinstance(spec, dict) or spec.get("type") not in ("local", "cloud"):
        raise ConfigError(f"{where}: controller must be a mapping with type: cloud or type: local (W&B's schema)")
    return spec


def _controller_pruner(controller: dict[str, Any], where: str) -> str | None:
    """``controller.pruner``: the pruner of ``flexcnn optuna run``, which ``--pruner`` still overrides."""
    pruner = controller.get("pruner")
    if pruner is not None and pruner not in PRUNERS:
        raise ConfigError(f"{where}: controller.pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    return pruner


def _metric(spec: Any, where: str) -> tuple[str, Direction, float | None]:
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}: metric must be a mapping like {{name: val/acc, goal: maximize}}")
    unknown = sorted(set(spec) - {"name", "goal", "target"})
    if unknown:
        raise ConfigError(f"{where}: metric has unknown key(s) {', '.join(unknown)}; expected name, goal, target")
    name = spec["name"]
    if name not in METRICS:
        raise ConfigError(
            f"{where}: metric.name {name!r} is not a per-epoch key the trainer logs; expected one of "
            f"{', '.join(METRICS)}"
        )
    goal = spec.get("goal", "minimize")  # W&B's default
    if goal not in ("maximize", "minimize"):
        raise ConfigError(f"{where}: metric.goal must be maximize or minimize, got {goal!r}")
    if goal != METRICS[name]:
        # Optimising accuracy downwards is always a typo, and best.pt would disagree with the study.
        raise ConfigError(f"{where}: metric.goal {goal} contradicts {name} (set goal: {METRICS[name]})")
    target = spec.get("target")
    if target is not None:
        target = _number(target, f"{where}: metric.target")
    return name, goal, target


def _early_terminate(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: early_terminate must be a mapping like {{type: hyperband, min_iter: 1}}")
    if spec.get("type") != "hyperband":
        raise ConfigError(f"{where}: early_terminate.type must be hyperband, got {spec.get('type')!r}")
    unknown = sorted(set(spec) - set(EARLY_TERMINATE_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: early_terminate has unknown key(s) {', '.join(unknown)}; "
            f"expected {', '.join(EARLY_TERMINATE_KEYS)}"
        )
    out: dict[str, Any] = {"type": "hyperband"}
    for key in ("min_iter", "max_iter", "s", "eta"):
        if key in spec:
            value = spec[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: early_terminate.{key} must be a positive integer, got {value!r}")
            out[key] = value
    if out.get("eta", 3) < 2:
        raise ConfigError(f"{where}: early_terminate.eta must be >= 2, got {out['eta']}")
    if "strict" in spec:
        out["strict"] = bool(spec["strict"])
    return out


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)  # YAML 1.1 reads 1e-3 as a string; users mean a number
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return number


def _base_config(command: Any, path: Path | None, where: str) -> tuple[Path | None, list[str]]:
    """The config file ``command`` trains and its ``--set`` overrides."""
    if command is None:
        return None, []
    if not isinstance(command, list) or not all(isinstance(t, str | int | float) for t in command):
        raise ConfigError(f"{where}: command must be a list of strings, got {command!r}")
    tokens = [str(t) for t in command]
    if "train" not in tokens:
        return None, []
    base: str | None = None
    fixed: list[str] = []
    rest = tokens[tokens.index("train") + 1 :]
    i = 0
    while i < len(rest):
        token = rest[i]
        if token == "--set" and i + 1 < len(rest):
            fixed.append(rest[i + 1])
            i += 2
            continue
        if token.startswith("--set="):
            fixed.append(token.removeprefix("--set="))
        elif token in ("--args-json", "--output-dir", "--resume", "--wandb-mode"):
            i += 2  # their values are not the base config
            continue
        elif base is None and token.endswith((".yaml", ".yml")) and not token.startswith("$"):
            base = token
        i += 1
    if base is None:
        return None, fixed
    return resolve_base_config(base, path, where), fixed


def resolve_base_config(name: str, sweep_path: Path | None, where: str = "sweep") -> Path:
    """Find the base config where a user would expect it.

    A relative name is looked up in the working folder (where ``wandb agent`` runs the command),
    then in the sweep file's folder and each folder above it, up to the repository root (the
    first one holding ``.git``) or the filesystem root. ``sweeps/x.yaml`` naming
    ``configs/base.yaml`` thus works from the repository root, from ``sweeps/`` and from anywhere
    else. The error names every place tried.
    """
    if Path(name).is_absolute():
        candidates = [Path(name)]
    else:
        candidates = [Path(name)]
        if sweep_path is not None:
            candidates += [folder / name for folder in _upward(Path(sweep_path).resolve().parent)]
    tried: list[Path] = []
    for candidate in candidates:
        if any(_same(candidate, seen) for seen in tried):
            continue
        if candidate.is_file():
            return candidate
        tried.append(candidate)
    shown = ", ".join(str(c.resolve()) if not c.is_absolute() else str(c) for c in tried)
    raise ConfigError(f"{where}: the base config {name!r} named in command was not found; tried {shown}")


def _upward(folder: Path) -> list[Path]:
    """``folder`` and its parents, up to and including the first that holds ``.git``."""
    out = []
    for current in (folder, *folder.parents):
        out.append(current)
        if (current / ".git").exists():
            break
    return out


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
