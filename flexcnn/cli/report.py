"""``flexcnn report``: an offline HTML page of a study or of a folder of run folders."""

from __future__ import annotations

import time
from pathlib import Path

import click

from flexcnn.errors import UserError
from flexcnn.search.worker_argv import STORAGE_ENV


@click.command("report")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--storage",
    metavar="URL",
    envvar=STORAGE_ENV,
    help="Study storage, as for `flexcnn optuna status` (env FLEXCNN_STORAGE; default: ./optuna-journal.log).",
)
@click.option("--study", "study_name", metavar="NAME", help="Study name (default: the only study in the storage).")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the study's trial folders are, when they moved since it ran (default: where the trials say).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The page to write (default: report.html in the study's trial folder, or in FOLDER).",
)
@click.pass_context
def report(
    ctx: click.Context,
    folder: Path | None,
    storage: str | None,
    study_name: str | None,
    runs_dir: Path | None,
    output: Path | None,
) -> None:
    """Write one offline HTML page (and PNGs of its figures next to it) for a study or for FOLDER.

    With --storage/--study: the Optuna study's sweep file and budget, a sortable leaderboard, optimisation
    history, Pareto front (several objectives), parallel coordinates, parameter importance, every trial's
    learning curve, the best trial's confusion matrix, per-class metrics and ROC curves, and the commands
    that export and retrain it. With FOLDER: the same for the run folders under it (W&B agent runs,
    `flexcnn train` runs, trial folders).
    """
    from flexcnn.report.build import write_report

    started = time.perf_counter()
    if folder is not None and ctx.get_parameter_source("storage") is click.core.ParameterSource.ENVIRONMENT:
        storage = None  # FLEXCNN_STORAGE is set for the study commands; a FOLDER report does not use it
    if folder is not None and (storage or study_name or runs_dir):
        raise UserError("give either FOLDER (run folders) or --storage/--study (an Optuna study), not both")
    if folder is not None:
        from flexcnn.report.folder_source import from_folder

        data = from_folder(folder)
    else:
        from flexcnn.report.study_source import from_study

        data = from_study(storage, study_name, runs_dir)
    written = write_report(data, output)
    click.echo(
        f"report: {written.html} ({written.size:,} bytes, {len(written.pngs)} PNGs in {written.png_dir}/, "
        f"{len(data.records)} trials, {time.perf_counter() - started:.1f} s)"
    )
