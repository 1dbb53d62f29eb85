"""``flexcnn predict``: classes and confidences of new images, from a trained checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", metavar="IMAGE_OR_FOLDER...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    help="Output format (default: json for an --output ending in .json, else csv).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of standard output.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="Classes per image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--skip-corrupt", is_flag=True, help="Skip unreadable images with a warning instead of failing.")
def predict(
    checkpoint: Path,
    inputs: tuple[Path, ...],
    fmt: str | None,
    output: Path | None,
    top_k: int,
    batch_size: int,
    skip_corrupt: bool,
) -> None:
    """Predict the class of each image (files, or folders searched recursively) with CHECKPOINT
    (best.pt or a run folder), preprocessed as in training, in the run's precision.

    Writes path, class and confidence per image (and the next --top-k guesses), as CSV or JSON.
    """
    from flexcnn.checkpoint import atomic_write_text
    from flexcnn.predict import format_predictions
    from flexcnn.predict import predict as run_predict

    def warn(line: str) -> None:
        click.echo(f"warning: {line}", err=True)

    fmt = fmt or ("json" if output is not None and output.suffix.lower() == ".json" else "csv")
    predictions = run_predict(
        checkpoint, inputs, top_k=top_k, batch_size=batch_size, skip_corrupt=skip_corrupt, warn=warn
    )
    text = format_predictions(predictions, fmt)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        from flexcnn.errors import UserError

        raise UserError(f"--output {output}: cannot write it ({exc.strerror or exc})") from None
    click.echo(f"wrote {len(predictions)} prediction(s) to {output}", err=True)
