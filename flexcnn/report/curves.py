"""Line charts Optuna does not draw (every trial's learning curve, the best trial's ROC curves).

Each chart is described once, as panels of series, and drawn twice: with plotly for the page
(interactive: hover names the trial) and with matplotlib for the PNG next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from flexcnn.report.data import ReportData

# Plotly's dash names -> matplotlib's line styles.
_DASH = {"solid": "-", "dash": "--", "dot": ":"}
_STATE_STYLE = {"COMPLETE": "solid", "PRUNED": "dash"}  # anything else (FAIL, RUNNING): dotted


@dataclass
class Series:
    """One line: ``xs``/``ys`` points, drawn ``dash``; ``end_marker`` marks where it was cut short."""

    name: str
    xs: list[float]
    ys: list[float]
    group: str = ""  # series of one trial in several panels share a legend entry
    dash: str = "solid"
    width: float = 1.5
    color: str | None = None
    end_marker: bool = False
    show_legend: bool = True


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xrange: tuple[float, float] | None = None


def learning_panels(data: ReportData) -> list[Panel]:
    """The monitored metric and validation loss per epoch, one line per trial with a history.

    Pruned trials are dashed and end in an x; the x axis spans the planned epochs, so a trial cut
    short is visibly short. The best trial is drawn thicker.
    """
    planned = [r.planned_epochs or r.epochs for r in data.records]
    longest = max([*planned, 1])
    metrics = [data.monitor] + (["val/loss"] if data.monitor != "val/loss" else ["val/acc"])
    panels = [Panel(f"{m} per epoch", "epoch", m, xrange=(0.8, longest + 0.2)) for m in metrics]
    for r in data.records:
        if not r.history:
            continue
        best = data.best is not None and r.number == data.best.number
        cut = f", {r.state.lower()} at epoch {r.epochs}" if r.state != "COMPLETE" else ""
        name = f"trial {r.label}{cut}" + (" (best)" if best else "")
        for k, (panel, metric) in enumerate(zip(panels, metrics, strict=True)):
            rows = [row for row in r.history if isinstance(row.get(metric), int | float)]
            panel.series.append(
                Series(
                    name=name,
                    xs=[row.get("epoch", i + 1) for i, row in enumerate(rows)],
                    ys=[row[metric] for row in rows],
                    group=f"t{r.number}",
                    dash=_STATE_STYLE.get(r.state, "dot"),
                    width=3.5 if best else 1.5,
                    color="#444444" if r.state == "PRUNED" else None,
                    end_marker=r.state != "COMPLETE",
                    show_legend=k == 0,
                )
            )
    return panels


def roc_panel(roc: dict[str, Any]) -> Panel:
    """The per-class ROC curves of a run's roc.json, with the chance diagonal."""
    panel = Panel("ROC curves (one class against the rest)", "false positive rate", "true positive rate")
    for name in roc.get("classes", []):
        curve = roc["curves"].get(name) or {}
        points = sorted(zip(curve.get("fpr", []), curve.get("tpr", []), strict=False))
        auc = roc.get("auroc", {}).get(name)
        label = f"{name} (AUC {auc:.4f})" if isinstance(auc, int | float) else str(name)
        panel.series.append(Series(label, [p[0] for p in points], [p[1] for p in points], group=str(name)))
    panel.series.append(Series("chance", [0, 1], [0, 1], dash="dot", color="#999999", width=1))
    return panel


def to_plotly(panels: list[Panel], height: int = 420) -> Figure:
    """The panels side by side as one plotly figure."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p.title for p in panels])
    palette = _palette()
    colors: dict[str, str] = {}
    for col, panel in enumerate(panels, start=1):
        for s in panel.series:
            color = s.color or colors.setdefault(s.group or s.name, palette[len(colors) % len(palette)])
            sizes = [0] * (len(s.xs) - 1) + [11 if s.end_marker else 0]
            fig.add_trace(
                go.Scatter(
                    x=s.xs,
                    y=s.ys,
                    name=s.name,
                    legendgroup=s.group or s.name,
                    showlegend=s.show_legend,
                    mode="lines+markers",
                    marker={"symbol": "x", "size": sizes, "color": color},
                    line={"dash": s.dash, "width": s.width, "color": color},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=panel.xlabel, range=list(panel.xrange) if panel.xrange else None, row=1, col=col)
        fig.update_yaxes(title_text=panel.ylabel, row=1, col=col)
    fig.update_layout(height=height, margin={"t": 40, "l": 50, "r": 10, "b": 40}, template="plotly_white")
    return fig


def to_png(panels: list[Panel], path: Path) -> None:
    """The panels side by side as a PNG (matplotlib), legend below when it is long."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), squeeze=False)
    colors: dict[str, Any] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[0], panels, strict=True):
        for s in panel.series:
            color = s.color or colors.setdefault(s.group or s.name, cycle[len(colors) % len(cycle)])
            label = s.name if s.show_legend else None
            ax.plot(s.xs, s.ys, _DASH.get(s.dash, "-"), color=color, linewidth=s.width, label=label)
            if s.end_marker and s.xs:
                ax.plot(s.xs[-1:], s.ys[-1:], "x", color=color, markersize=8, markeredgewidth=2)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.xrange:
            ax.set_xlim(*panel.xrange)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
        rows = -(-len(labels) // 4)
        fig.subplots_adjust(bottom=min(0.5, 0.14 + 0.045 * rows), top=0.92, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _palette() -> list[str]:
    from plotly.colors import qualitative

    return list(qualitative.Plotly) + list(qualitative.D3)
