"""``flexcnn train`` and ``flexcnn evaluate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from flexcnn.cli.options import config_argument, set_option
from flexcnn.errors import ConfigError


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
    from flexcnn.errors import TrainingDiverged
    from flexcnn.run import run

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
    reporters = default_reporters(config)
    try:
        result = run(config, reporters, run_dir=output_dir, resume=resume_dir is not None)
    except TrainingDiverged as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if result.status == "interrupted":
        sys.exit(130)


def default_reporters(config: object) -> list[object]:
    """Console, plus W&B when its reporter is installed and not disabled."""
    from flexcnn.reporters import ConsoleReporter

    reporters: list[object] = [ConsoleReporter(progress=config.logging.progress)]  # type: ignore[attr-defined]
    try:
        from flexcnn.reporters.wandb import wandb_reporter_for
    except ModuleNotFoundError:
        return reporters
    wandb_rep = wandb_reporter_for(config)
    if wandb_rep is not None:
        reporters.append(wandb_rep)
    return reporters


def _json_overrides(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--args-json {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--args-json {path}: expected a JSON object of dotted keys")
    out = []
    for key, value in data.items():
        # wandb writes {"param": {"value": v}} in args_json_file
        if isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]
        out.append(f"{key}={json.dumps(value)}")
    return out


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
