"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, e.g. --set optim.lr=3e-4 --set model.num_filters=[32,64].",
)

config_argument = click.argument(
    "config_path",
    metavar="CONFIG",
    required=False,
    type=click.Path(dir_okay=False, path_type=Path),
)
