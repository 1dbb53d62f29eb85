"""The ``flexcnn`` command line: a click group whose subcommands live in small modules."""

from __future__ import annotations

import logging
import sys

import click

from flexcnn.errors import UserError
from flexcnn.secret_files import load_secret_files


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="flexcnn")
def cli() -> None:
    """Train image classifiers and sweep their hyperparameters with W&B or Optuna."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # WANDB_API_KEY_FILE / PGPASSWORD_FILE -> WANDB_API_KEY / PGPASSWORD, for this command and what it starts.
    load_secret_files()


def _register_commands() -> None:
    from flexcnn.cli import inspect, predict, report, train

    cli.add_command(train.train)
    cli.add_command(train.evaluate)
    cli.add_command(predict.predict)
    cli.add_command(inspect.models)
    cli.add_command(inspect.datasets)
    cli.add_command(inspect.config)
    cli.add_command(report.report)
    for module_name, attr in (("flexcnn.cli.optuna", "optuna_group"), ("flexcnn.cli.agent", "agent_group")):
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        cli.add_command(getattr(module, attr))


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: user mistakes exit 2 with one message and no traceback."""
    try:
        # With standalone_mode=False click returns ctx.exit(n)'s code instead of exiting.
        code = cli.main(args=argv, prog_name="flexcnn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
