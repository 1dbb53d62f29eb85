"""Write a report: the page and, in a folder next to it, a PNG of each of its figures."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flexcnn.errors import UserError
from flexcnn.report.data import ReportData
from flexcnn.report.figures import learning_figure, roc_figure, study_figures
from flexcnn.report.page import BestTrial, render
from flexcnn.report.records import format_value

# The PNGs a report writes; older ones of these names are replaced, other files left alone.
PNG_NAMES = ("history", "pareto", "parallel", "importance", "learning", "roc", "confusion")


@dataclass
class WrittenReport:
    """Where the report went and how big the page is."""

    html: Path
    png_dir: Path
    pngs: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.html.stat().st_size


def write_report(data: ReportData, output: Path | None = None) -> WrittenReport:
    """Write ``output`` (default ``report.html`` in the study's trial folder or the runs folder) and its PNGs."""
    html = Path(output) if output is not None else data.default_out / "report.html"
    if html.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--output {html}: expected a file name ending in .html")
    png_dir = html.with_name(f"{html.stem}-figures")
    try:
        png_dir.mkdir(parents=True, exist_ok=True)
        for name in PNG_NAMES:
            (png_dir / f"{name}.png").unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the report next to {html} ({exc.strerror or exc})") from None

    figures = study_figures(data, png_dir)
    figures["learning"] = learning_figure(data, png_dir)
    best = best_trial(data, png_dir)
    _write_atomically(html, render(data, figures, best, png_dir.name))
    return WrittenReport(html, png_dir, sorted(png_dir.glob("*.png")))


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` whole: a browser that has the old page open never reads half a new one.

    (flexcnn.checkpoint has the same for run folders, but importing it imports torch: 2 s of a report's few.)
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def best_trial(data: ReportData, png_dir: Path) -> BestTrial | None:
    """The best trial's confusion matrix, per-class metrics and ROC curves, from its run folder."""
    record = data.best
    if record is None:
        return None
    label = f"trial {record.number}" + (f" ({record.label})" if record.label != str(record.number) else "")
    best = BestTrial(label)
    values = record.values or []
    best.lines.append(
        ", ".join(f"{n} {v:.4f}" for n, v in zip(data.objective_names, values, strict=False))
        + (" (on the Pareto front; the best of them at the first objective)" if data.multi else "")
    )
    tests = [f"{k} {v:.4f}" for k, v in record.metrics.items() if k.count("/") == 1 and k.startswith("test/")]
    if tests:
        best.lines.append(", ".join(tests))
    if record.best_epoch is not None:
        best.lines.append(f"best epoch {record.best_epoch} of {record.epochs}")
    if record.params:
        best.lines.append("parameters: " + ", ".join(f"{k}={format_value(v)}" for k, v in record.params.items()))
    if record.run_dir is None:
        best.lines.append(record.note or "run folder not found")
        return best
    best.lines.append(f"run folder {record.run_dir}")
    confusion = record.file("confusion.png")
    if confusion is not None:
        best.confusion_png = confusion.read_bytes()
        shutil.copyfile(confusion, png_dir / "confusion.png")
    best.per_class = record.read_json("per_class.json")
    best.roc = record.read_json("roc.json")
    best.roc_figure = roc_figure(best.roc, png_dir)
    return best
