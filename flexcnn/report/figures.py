"""The report's figures: Optuna's own plots (plotly for the page, its matplotlib twins for the PNGs)
and the learning and ROC curves; each as an HTML fragment plus a PNG next to the page.

A figure that cannot be drawn (one completed trial has no parameter importance) carries a note
saying why instead, and the page shows the note.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexcnn.report import curves

if TYPE_CHECKING:
    from flexcnn.report.data import ReportData

log = logging.getLogger(__name__)
# Plotly's mode bar without its logo (a link to plotly's site; the page is offline).
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Figure:
    """One figure of the page: ``html`` (a plotly div) and ``png`` (a file name), or ``note`` why not."""

    key: str
    title: str
    html: str | None = None
    png: str | None = None
    note: str | None = None


def study_figures(data: ReportData, png_dir: Path) -> dict[str, Figure]:
    """Optimisation history, Pareto front (several objectives), parallel coordinates, parameter importance."""
    import matplotlib

    matplotlib.use("Agg")  # before Optuna's matplotlib plots import pyplot: no display needed
    import optuna.visualization as ov
    import optuna.visualization.matplotlib as om
    from optuna.importance import FanovaImportanceEvaluator

    names = data.objective_names
    # With several objectives, the first stands for the trial in the plots of one objective.
    first: dict[str, Any] = {"target_name": names[0]}
    if data.multi:
        first["target"] = lambda t: t.values[0]
    # A fixed seed: the page's and the PNG's importances come from two fANOVA fits that must agree.
    importance = {"evaluator": FanovaImportanceEvaluator(seed=0)}
    # (key, title, the plot's name in optuna.visualization and in its matplotlib twin, its arguments)
    plots: list[tuple[str, str, str, dict[str, Any]]] = [
        ("history", f"Optimisation history ({names[0]})", "plot_optimization_history", first),
    ]
    if data.multi:
        plots.append(("pareto", "Pareto front", "plot_pareto_front", {"target_names": names}))
    plots += [
        ("parallel", f"Parallel coordinates ({names[0]})", "plot_parallel_coordinate", first),
        ("importance", "Parameter importance (fANOVA)", "plot_param_importances", importance),
    ]
    out = {}
    for key, title, plot, kwargs in plots:
        out[key] = _optuna_figure(key, title, getattr(ov, plot), getattr(om, plot), kwargs, png_dir, data)
    return out


def _optuna_figure(
    key: str,
    title: str,
    plotly_plot: Callable[..., Any],
    mpl_plot: Callable[..., Any],
    kwargs: dict[str, Any],
    png_dir: Path,
    data: ReportData,
) -> Figure:
    figure = Figure(key, title)
    why = _cannot_plot(key, data)
    if why:
        figure.note = why
        return figure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are marked experimental
        try:
            fig = plotly_plot(data.study, **kwargs)
            fig.update_layout(template="plotly_white", title=None, height=460, margin={"t": 30})
            figure.html = fig_html(fig, key)
            axes = mpl_plot(data.study, **kwargs)
            save_axes_png(axes, png_dir / f"{key}.png")
            figure.png = f"{key}.png"
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.info("cannot draw %s: %s", key, exc)
            figure.note = f"Optuna could not draw this figure: {exc}"
    return figure


def _cannot_plot(key: str, data: ReportData) -> str | None:
    """Why Optuna's plot ``key`` has nothing to show for this study, or None when it has."""
    complete = [r for r in data.records if r.state == "COMPLETE" and r.values]
    if not complete:
        return "no completed trial yet"
    if key in ("parallel", "importance"):
        if not data.study.trials or not any(t.params for t in data.study.trials):
            return "no parameters vary between these runs"
        if key == "importance" and len(complete) < 2:
            return "parameter importance needs at least 2 completed trials"
    if key == "pareto" and len(data.directions) > 3:
        return f"a Pareto front of {len(data.directions)} objectives cannot be drawn (2 or 3 can)"
    return None


def learning_figure(data: ReportData, png_dir: Path) -> Figure:
    """Every trial's learning curve; pruned ones dashed, ending in an x before the planned last epoch."""
    figure = Figure("learning", "Learning curves")
    panels = curves.learning_panels(data)
    if not any(p.series for p in panels):
        figure.note = "no trial has reported an epoch yet"
        return figure
    figure.html = fig_html(curves.to_plotly(panels, height=460), "learning")
    curves.to_png(panels, png_dir / "learning.png")
    figure.png = "learning.png"
    return figure


def roc_figure(roc: dict[str, Any] | None, png_dir: Path) -> Figure:
    """The best trial's per-class ROC curves from its roc.json."""
    figure = Figure("roc", "ROC curves")
    if not roc or not roc.get("curves"):
        figure.note = (
            "this run folder has no roc.json (runs before flexcnn wrote it, or runs without a final "
            "evaluation); `flexcnn evaluate RUN/best.pt` gives the AUROC"
        )
        return figure
    panel = curves.roc_panel(roc)
    fig = curves.to_plotly([panel], height=480)
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    figure.html = fig_html(fig, "roc")
    curves.to_png([panel], png_dir / "roc.png")
    figure.png = "roc.png"
    return figure


def fig_html(fig: Any, key: str) -> str:
    """A plotly figure as a div and its script; plotly.js itself is inlined once, in the page's head."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}", config=PLOTLY_CONFIG)


def save_axes_png(axes: Any, path: Path) -> None:
    """Save the figure that Optuna's matplotlib plot (one Axes or an array of them) drew on."""
    import matplotlib.pyplot as plt

    first = axes.flat[0] if hasattr(axes, "flat") else axes
    fig = first.figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
