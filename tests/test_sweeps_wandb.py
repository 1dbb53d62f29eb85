"""The sweep YAMLs in sweeps/ as W&B sees them, and the command `wandb agent` would run for them.

W&B's own ``sweeps`` package validates each YAML and samples a run (it pins
numpy<2, so it runs in an isolated ``uvx`` environment). wandb's own
``create_sweep_command`` / ``create_sweep_command_args`` build the exact argv an
agent runs; the test runs it offline with the variables an agent sets and reads
the run back with ``wandb leet inspect --json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args
from wandb.sdk.lib import config_util

from flexcnn.cli.train import _json_overrides
from flexcnn.config import load_config
from flexcnn.errors import ConfigError
from flexcnn.sections import Monitor
from tests.conftest import REPO
from tests.helpers import offline_run_dir, read_offline_run, uvx

SWEEPS = REPO / "sweeps"
SWEEP_FILES = sorted(SWEEPS.glob("*.yaml"))
RUNNABLE = ["flexcnn.yaml", "grid-digits.yaml", "random-digits.yaml"]  # trained end to end on digits here
PRETRAINED = {"resnet50.yaml": "configs/resnet50-finetune.yaml", "vgg19.yaml": "configs/vgg19-finetune.yaml"}
SWEEP_ID = "testsweep"
# Keys run() logs every epoch; a sweep's metric must be one of them, spelled exactly.
EPOCH_KEYS = {*get_args(Monitor), "train/loss", "train/acc"}

SAMPLER = """
import json, random, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, sweeps, yaml
random.seed(0); np.random.seed(0)
out = {}
for path in sys.argv[1:]:
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    violations = list(sweeps.schema_violations_from_proposed_config(cfg))
    try:
        sweeps.SweepConfig(cfg)
    except Exception as exc:
        violations.append(str(exc))
    # validate=False: sweeps' fill-in step drops nested `parameters:` blocks, the server keeps them.
    sample = sweeps.next_run(cfg, [], validate=False).config
    out[path] = {"violations": violations, "sample": sample}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def wandb_view() -> dict[str, dict[str, Any]]:
    """W&B's own verdict and one sampled run per sweep YAML, keyed by file name."""
    proc = subprocess.run(
        [*uvx(), "--from", "sweeps", "python", "-c", SAMPLER, *map(str, SWEEP_FILES)],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    assert proc.returncode == 0, f"sweeps package failed:\n{proc.stderr[-3000:]}"
    return {Path(path).name: value for path, value in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _sweep(name: str) -> dict[str, Any]:
    return yaml.safe_load((SWEEPS / name).read_text())


def _base_config(sweep: dict[str, Any]) -> Path | None:
    """The base config named in the command: the first YAML argument after `train`."""
    command = [str(c) for c in sweep["command"]]
    after = command[command.index("train") + 1 :]
    return next((REPO / c for c in after if c.endswith((".yaml", ".yml"))), None)


def _existing_base(sweep: dict[str, Any]) -> Path | None:
    # configs/resnet50-finetune.yaml and vgg19-finetune.yaml come with the Pretrained work;
    # until they exist the pretrained sweeps are checked against defaults plus their own constants.
    base = _base_config(sweep)
    return base if base is not None and base.is_file() else None


def _flat_parameters(parameters: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, spec in parameters.items():
        if "parameters" in spec:
            out.update(_flat_parameters(spec["parameters"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec
    return out


def _candidates(spec: dict[str, Any]) -> list[Any]:
    """Every value a parameter can take at its edges: each listed value, or min and max."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def _write_args_json(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / f"args-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(params))
    return path


def _at(tree: dict[str, Any], dotted: str) -> Any:
    if dotted in tree:  # a dotted sweep parameter: the sweep's own key in a run's config, not nested
        return tree[dotted]
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def agent_argv(sweep: dict[str, Any], args: dict[str, Any], workdir: Path, run_id: str) -> list[str]:
    """The argv `wandb agent` runs for a sampled run: wandb's own functions, the agent's macro expansion.

    Mirrors ``wandb.wandb_agent.Agent._command_run`` for a command-line sweep.
    """
    command = create_sweep_command(list(sweep["command"]))
    sweep_vars = create_sweep_command_args({"args": args})
    json_file = workdir / "wandb" / f"sweep-{SWEEP_ID}" / f"config-{run_id}.json"
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(sweep_vars["args_json"][0])
    sweep_vars.update(
        interpreter=["python"], program=[sweep["program"]], args_json_file=[str(json_file)], env=["/usr/bin/env"]
    )
    argv: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += sweep_vars.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


# --------------------------------------------------------------------------- the YAMLs


def test_the_sweeps_are_there() -> None:
    names = {p.name for p in SWEEP_FILES}
    assert {*RUNNABLE, *PRETRAINED} <= names
    methods = {_sweep(n)["method"] for n in [*RUNNABLE, *PRETRAINED]}
    assert methods == {"bayes", "grid", "random"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_wandb_accepts_every_sweep(path: Path, wandb_view: dict[str, dict[str, Any]]) -> None:
    assert wandb_view[path.name]["violations"] == []


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_follows_the_convention(path: Path) -> None:
    sweep = _sweep(path.name)
    allowed = {"program", "command", "method", "metric", "parameters", "early_terminate", "run_cap", "name"}
    assert set(sweep) <= {*allowed, "description", "controller"}
    if "controller" in sweep:  # the Optuna path's objectives or pruner; W&B's own controller stays the default
        assert set(sweep["controller"]) - {"type"} in ({"objectives"}, {"pruner"})
        assert sweep["controller"]["type"] == "cloud"
    command = [str(c) for c in sweep["command"]]
    # Our console script, never a bare interpreter the agent might pick wrongly.
    assert command[:2] == ["flexcnn", "train"] and sweep["program"] == "flexcnn"
    assert "${args}" not in command and "${interpreter}" not in command
    assert command[command.index("--args-json") + 1] == "${args_json_file}"
    assert sweep["metric"]["name"] in EPOCH_KEYS
    base = _base_config(sweep)
    assert base is not None
    if path.name in PRETRAINED:
        assert base == REPO / PRETRAINED[path.name]
    else:
        assert base.is_file()
    # Each sweep names its data set, as a parameter or in its base config.
    named_in_base = base.is_file() and "source" in (yaml.safe_load(base.read_text()).get("data") or {})
    assert "data.source" in _flat_parameters(sweep["parameters"]) or named_in_base


def test_wandb_runs_a_multi_objective_sweep_file_as_a_plain_metric_sweep(
    wandb_view: dict[str, dict[str, Any]],
) -> None:
    # W&B has one metric: it accepts controller.objectives (its schema lets controller carry other keys)
    # and a sampled run gets the parameters only, so `flexcnn train --args-json` sees nothing new.
    sweep = _sweep("pareto-digits.yaml")
    assert sweep["controller"]["objectives"] and wandb_view["pareto-digits.yaml"]["violations"] == []
    assert set(wandb_view["pareto-digits.yaml"]["sample"]) == set(sweep["parameters"])


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_parameter_is_a_runconfig_field(path: Path, tmp_path: Path) -> None:
    sweep = _sweep(path.name)
    base = _existing_base(sweep)
    params = _flat_parameters(sweep["parameters"])
    constants = {k: spec["value"] for k, spec in params.items() if "value" in spec}
    for name, spec in params.items():
        for value in _candidates(spec):
            overrides = _json_overrides(_write_args_json(tmp_path, {**constants, name: value}))
            try:
                load_config(base, overrides)
            except ConfigError as exc:
                pytest.fail(f"{path.name}: {name}={value!r} is not accepted by RunConfig:\n{exc}")


# --------------------------------------------------------------------------- --args-json


def test_args_json_flattens_nested_blocks_and_keeps_lists(tmp_path: Path) -> None:
    args = _write_args_json(
        tmp_path,
        {
            "optim.lr": 3e-4,
            "model": {"activation": "gelu", "num_filters": [16, 32]},
            "data": {"value": {"augment": "none"}},  # wandb's {"value": ...} wrapper
            "train.epochs": {"value": 2},
            "wandb_version": 1,
        },
    )
    overrides = _json_overrides(args)
    assert sorted(overrides) == sorted(
        [
            "optim.lr=0.0003",
            'model.activation="gelu"',
            "model.num_filters=[16, 32]",
            'data.augment="none"',
            "train.epochs=2",
        ]
    )
    config = load_config(REPO / "configs" / "mnist5k.yaml", overrides)
    # Merged field by field: the rest of each section keeps the base config's values.
    assert config.model.num_filters == [16, 32] and config.model.activation == "gelu"
    assert config.model.residual is True and config.model.dense_units == [128]
    assert config.data.source == "mnist5k" and config.data.augment == "none"
    assert config.optim.lr == 3e-4 and config.optim.name == "adamw"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "--args-json"),
        ("[1, 2]", "expected a JSON object"),
        ('{"model": {}}', "empty mapping"),
        ('{"model.activation": "relu", "model": {"activation": "gelu"}}', "given twice"),
    ],
)
def test_args_json_mistakes_are_user_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "args.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        _json_overrides(path)


def test_args_json_unknown_field_fails_at_load_time(tmp_path: Path) -> None:
    overrides = _json_overrides(_write_args_json(tmp_path, {"model": {"activaton": "gelu"}}))
    with pytest.raises(ConfigError, match=r"model\.activaton: unknown field; did you mean 'activation'"):
        load_config(None, overrides)


# --------------------------------------------------------------------------- the agent's command


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One bytecode cache for the agent subprocesses: where PYTHONDONTWRITEBYTECODE is set,
    # each would otherwise compile torch, sklearn and wandb from source again.
    return tmp_path_factory.mktemp("pycache")


def _agent_env(tmp_path: Path, args: dict[str, Any], run_id: str, pycache: Path) -> dict[str, str]:
    """What `wandb agent` puts in a run's environment, on a machine with no W&B login or server."""
    param_path = tmp_path / "wandb" / f"sweep-{SWEEP_ID}" / f"config-{run_id}.yaml"
    param_path.parent.mkdir(parents=True, exist_ok=True)
    config_util.save_config_file_from_dict(str(param_path), args)
    drop = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_IDENTITY_TOKEN_FILE", "VIRTUAL_ENV")
    drop += ("PYTHONDONTWRITEBYTECODE",)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        WANDB_SWEEP_ID=SWEEP_ID,
        WANDB_RUN_ID=run_id,
        WANDB_SWEEP_PARAM_PATH=str(param_path),
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        PYTHONPYCACHEPREFIX=str(pycache),
    )
    return env


@pytest.mark.parametrize("name", RUNNABLE)
def test_agent_command_runs_offline_and_logs_the_sweep(
    name: str, tmp_path: Path, wandb_view: dict[str, dict[str, Any]], pycache: Path
) -> None:
    sweep = _sweep(name)
    sampled = wandb_view[name]["sample"]
    # Tiny and fast on the embedded digits set; everything else as the sweep sampled it.
    args = {
        **sampled,
        "data.source": {"value": "digits"},
        "train.epochs": {"value": 2},
        "data.limit": {"value": 400},
        "logging.output_dir": {"value": str(tmp_path / "runs")},
        "logging.run_name": {"value": "agent-run"},
        "logging.progress": {"value": False},
    }
    run_id = f"run{uuid.uuid4().hex[:8]}"
    argv = agent_argv(sweep, args, tmp_path, run_id)
    assert argv[0] == "flexcnn" and "python" not in argv
    env = _agent_env(tmp_path, args, run_id, pycache)
    assert Path(shutil.which("flexcnn", path=env["PATH"]) or "").parent == Path(sys.executable).parent

    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "runs" / "agent-run"
    wandb_dir = offline_run_dir(run_dir)
    assert f"wandb sync {wandb_dir}" in proc.stderr  # offline, said once, with the command to use later
    wb = read_offline_run(wandb_dir)

    assert wb.run["run_id"] == run_id and wb.run["sweep_id"] == SWEEP_ID
    epochs = [row for row in wb.history if "train/loss" in row]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert all(isinstance(row["val/acc"], float) for row in epochs)
    assert isinstance(wb.summary["test/acc"], float)
    assert wb.summary["val/acc"] == {"max": max(row["val/acc"] for row in epochs)}
    assert wb.summary[f"best/{sweep['metric']['name']}"] is not None

    # Every sampled parameter reached the run's config, lists intact, nested blocks merged.
    base = _existing_base(sweep)
    expected = load_config(base, _json_overrides(Path(argv[argv.index("--args-json") + 1]))).to_dict()
    flat = {}
    for key, spec in args.items():
        value = spec["value"]
        flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    assert any(isinstance(v, list) for v in flat.values()), "each runnable sweep samples a list-valued parameter"
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for dotted, value in flat.items():
        # W&B's column holds the value as the sweep drew it (128); the run resolved it ([128]).
        logged = _at(wb.config, dotted)
        assert logged == value or logged == [value], (dotted, logged, value)
        assert _at(resolved, dotted) == _at(expected, dotted), dotted
        assert _at(expected, dotted) in (value, [value]), dotted
    assert wb.config["model"]["kind"] == "flexible_cnn"  # a nested block never replaces its section

    confusion = wb.table("media/table/test/confusion_matrix_table")
    assert confusion["columns"] == ["Actual", "Predicted", "nPredictions"]
    assert (wandb_dir / "files").is_dir() and wb.exit_code == 0


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_agent_command_for_pretrained_sweeps(name: str, tmp_path: Path, wandb_view: dict[str, dict[str, Any]]) -> None:
    # No ImageNet weights offline: build the argv and check what it would train.
    sweep = _sweep(name)
    sampled = wandb_view[name]["sample"]
    argv = agent_argv(sweep, sampled, tmp_path, "pretrainedrun")
    assert argv[:3] == ["flexcnn", "train", PRETRAINED[name]]
    overrides = _json_overrides(Path(argv[argv.index("--args-json") + 1]))
    config = load_config(_existing_base(sweep), overrides)
    assert config.model.kind == name.removesuffix(".yaml")
    assert config.model.strategy == sampled["model.strategy"]["value"]
    assert config.optim.lr == pytest.approx(sampled["optim.lr"]["value"])
