"""``flexcnn models``, ``flexcnn datasets`` and ``flexcnn config``."""

from __future__ import annotations

from pathlib import Path

import click

from flexcnn.cli.options import config_argument, set_option


@click.command()
def models() -> None:
    """List the registered model kinds."""
    from flexcnn.models import available_models

    for name, description in available_models().items():
        click.echo(f"{name:28s} {description}")


@click.command()
def datasets() -> None:
    """List the data sources."""
    from flexcnn.data import available_sources

    for name, description in available_sources().items():
        click.echo(f"{name:14s} {description}")


@click.command()
@config_argument
@set_option
def config(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved CONFIG (defaults filled in, overrides applied) as YAML."""
    from flexcnn.config import dump_config, load_config

    click.echo(dump_config(load_config(config_path, overrides)), nl=False)
