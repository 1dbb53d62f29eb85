"""``flexcnn train`` and ``flexcnn evaluate``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flexcnn.cli.options import config_argument, set_option
from flexcnn.errors import ConfigError

if TYPE_CHECKING:
    from flexcnn.config import RunConfig
    from flexcnn.reporters.base import Reporter, RunResult


@click.command()
@config_argument
@set_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder to write (default: logging.output_dir/<run name>).",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last checkpoint.",
)
@click.option(
    "--wandb-mode",
    type=click.Choice(["auto", "online", "offline", "disabled"]),
    help="Shortcut for --set logging.wandb.mode=...",
)
@click.option(
    "--args-json",
    "args_json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file of dotted overrides (what `wandb agent` writes for ${args_json_file}).",
)
def train(
    config_path: Path | None,
    overrides: tuple[str, ...],
    output_dir: Path | None,
    resume_dir: Path | None,
    wandb_mode: str | None,
    args_json: Path | None,
) -> None:
    """Train one model from CONFIG (YAML; defaults to the digits demo) and evaluate it."""
    from flexcnn.config import load_config
    from flexcnn.errors import RunFailed
    from flexcnn.reporters import ReporterContext, build_reporters
    from flexcnn.signals import interrupt_exit_code, sigterm_as_interrupt

    extra = list(overrides)
    if args_json is not None:
        extra = [*_json_overrides(args_json), *extra]
    if wandb_mode:
        extra.append(f"logging.wandb.mode={wandb_mode}")
    if resume_dir is not None:
        if config_path is None and (resume_dir / "config.yaml").is_file():
            config_path = resume_dir / "config.yaml"
        output_dir = resume_dir
    config = load_config(config_path, extra)
    resume, requeued = resume_dir is not None, False
    if resume_dir is None and output_dir is None and os.environ.get("WANDB_SWEEP_ID"):
        output_dir, resume = _requeued_run_dir(config)
        requeued = resume
    # The run folder's files, the console and W&B unless its resolved mode is disabled.
    reporters = build_reporters(ReporterContext(config))
    try:
        # SIGTERM (docker stop, wandb agent --forward-signals, schedulers) stops as cleanly as Ctrl-C.
        with sigterm_as_interrupt():
            result = _run(config, reporters, output_dir, resume=resume, requeued=requeued)
    except RunFailed as exc:
        click.echo(f"error: run failed: {exc}", err=True)
        sys.exit(1)
    if result.status == "interrupted" and not result.extra.get("stopped_by_wandb"):
        # Under a sweep, 128 + the signal: nonzero, so W&B requeues the run marked preempting.
        # A run W&B stopped itself (early termination) ends like a pruned one, with 0.
        sys.exit(interrupt_exit_code() if os.environ.get("WANDB_SWEEP_ID") else 130)


def _requeued_run_dir(config: RunConfig) -> tuple[Path | None, bool]:
    """Under ``wandb agent``: the folder this W&B run left behind when it was preempted, and whether to resume it.

    W&B hands a requeued run back with the same run id and command line. Its folder is
    found by run id under logging.output_dir; from another node (no such folder here)
    the run starts over, and the W&B reporter says so when the server has its history.
    """
    from flexcnn.run_folder import find_wandb_run_dir

    run_id = os.environ.get("WANDB_RUN_ID", "")
    found = find_wandb_run_dir(Path(config.logging.output_dir), run_id) if run_id else None
    if found is None:
        return None, False
    if (found / "last.pt").is_file():
        click.echo(f"W&B run {run_id} was requeued: resuming {found} from its last.pt", err=True)
        return found, True
    click.echo(f"W&B run {run_id} was requeued before its first epoch ended: starting over in {found}", err=True)
    return found, False


def _run(
    config: RunConfig, reporters: list[Reporter], run_dir: Path | None, *, resume: bool, requeued: bool
) -> RunResult:
    """run(); a requeued sweep run whose last.pt cannot be resumed starts over in its folder instead of failing."""
    from flexcnn.errors import CheckpointError
    from flexcnn.run import run

    try:
        return run(config, reporters, run_dir=run_dir, resume=resume)
    except CheckpointError as exc:
        if not requeued:
            raise
        click.echo(f"cannot resume {run_dir} ({exc}); training from epoch 0", err=True)
        return run(config, reporters, run_dir=run_dir)


# Keys that wandb writes next to parameters in its own config files, never RunConfig fields.
_WANDB_BOOKKEEPING = ("wandb_version", "_wandb")


def _json_overrides(path: Path) -> list[str]:
    """Turn the JSON file that ``wandb agent`` writes for ``${args_json_file}`` into dotted overrides.

    wandb writes ``{"optim.lr": 0.001, "model.num_filters": [32, 64]}`` for dotted
    parameter names and ``{"model": {"activation": "gelu", ...}}`` for nested
    ``parameters:`` blocks. Nested values are flattened to dotted keys, so they
    merge into the base config field by field and never replace a whole section.
    Lists stay lists. ``{"value": v}`` wrappers (wandb's config-file format) are
    unwrapped.
    """
    from flexcnn.overrides import dotted_items

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--args-json {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--args-json {path}: expected a JSON object of parameters, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _WANDB_BOOKKEEPING:
            continue
        if isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]
        for dotted, leaf in dotted_items({str(key): value}):
            if isinstance(leaf, dict):  # what is left of a mapping is an empty one
                raise ConfigError(f"--args-json {path}: parameter {dotted!r} is an empty mapping")
            if dotted in flat and flat[dotted] != leaf:
                raise ConfigError(f"--args-json {path}: {dotted} is given twice, as {flat[dotted]!r} and {leaf!r}")
            flat[dotted] = leaf
    return [f"{key}={json.dumps(value)}" for key, value in flat.items()]


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override data fields for evaluation, e.g. --data source=imagefolder --data root=DIR.",
)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(checkpoint: Path, data_overrides: tuple[str, ...], split: str, as_json: bool) -> None:
    """Evaluate a saved CHECKPOINT (best.pt or a run folder) on its data or other data."""
    from flexcnn.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, [f"data.{o}" for o in data_overrides], split)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            click.echo(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")
