"""The HTML page that ties the figures and tables together: one self-contained, offline file.

Plotly's JavaScript is inlined once in the head; images are data URIs; a Content-Security-Policy
forbids the page any request at all, so it cannot reach the network even by accident.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from flexcnn.report.data import ReportData
from flexcnn.report.figures import Figure
from flexcnn.report.tables import SORT_JS, leaderboard, per_class_table

# Everything the page needs is inline; nothing may be fetched (images are data: URIs).
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { font-size: 24px; margin: 24px 0 4px; } h2 { font-size: 19px; margin: 0 0 10px; }
section { border-top: 1px solid #ddd; padding: 18px 0; } .muted { color: #666; }
pre { background: #f6f8fa; padding: 10px; overflow: auto; max-height: 420px; font-size: 12.5px; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; font-size: 12.5px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { cursor: pointer; background: #f3f3f3; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.best td { background: #fff6d6; }
td.pruned { color: #8a6d00; } td.fail { color: #b00020; } td.running, td.waiting { color: #555; }
.note { background: #fff4e5; padding: 8px 12px; border-left: 3px solid #f0a000; }
.row { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; } .row > div { flex: 1 1 420px; }
img.confusion { max-width: 100%; border: 1px solid #eee; } nav a { margin-right: 12px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; } dt { color: #666; } dd { margin: 0; }
"""


@dataclass
class BestTrial:
    """What the page shows of the best trial: its confusion matrix, per-class metrics and ROC curves."""

    label: str
    confusion_png: bytes | None = None
    per_class: dict[str, Any] | None = None
    roc: dict[str, Any] | None = None
    roc_figure: Figure | None = None
    lines: list[str] = field(default_factory=list)  # what it is: objective values, epochs, run folder


def render(data: ReportData, figures: dict[str, Figure], best: BestTrial | None, png_dir: str) -> str:
    """The whole page as one HTML string."""
    from plotly.offline import get_plotlyjs

    sections = [_overview(data), _section("leaderboard", "Leaderboard", _leaderboard_body(data))]
    for key in ("history", "pareto", "parallel", "importance", "learning"):
        if key in figures:
            sections.append(_figure_section(figures[key], png_dir))
    sections += [_best_section(best, png_dir), _reproduce_section(data)]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in _nav(figures))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(data.title)}</title><style>{CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>{escape(data.title)}</h1>
<p class="muted">{escape(data.source)}; report written {datetime.now():%Y-%m-%d %H:%M}</p>
<nav>{nav}</nav>
{"".join(sections)}
<script>{SORT_JS}</script>
</body></html>
"""


def _nav(figures: dict[str, Figure]) -> list[tuple[str, str]]:
    items = [("overview", "Study"), ("leaderboard", "Leaderboard")]
    items += [(f.key, f.title.split(" (")[0]) for f in figures.values()]
    return [*items, ("best", "Best trial"), ("reproduce", "Reproduce")]


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>\n'


def _overview(data: ReportData) -> str:
    counts = data.counts()
    rows = [("trials", ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "none")]
    goals = ", ".join(f"{n} ({d})" for n, d in zip(data.objective_names, data.directions, strict=True))
    rows.append(("objectives" if data.multi else "objective", goals))
    budget = data.settings.get("n_trials")
    if budget:
        finished = counts["COMPLETE"] + counts["PRUNED"]
        rows.append(("budget", f"{budget} trials ({finished} finished)"))
    for key in ("sampler", "pruner", "target"):
        if data.settings.get(key) is not None:
            rows.append((key, str(data.settings[key])))
    known = {"metric", "direction", "n_trials", "fingerprint", "sweep_file", "sampler", "pruner", "target"}
    rows += [(k, str(v)) for k, v in data.settings.items() if k not in known and v is not None]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    body = f"<dl>{dl}</dl>"
    if data.sweep_path:
        shown = escape(data.sweep_text) if data.sweep_text is not None else None
        body += f"<h3>Sweep file <code>{escape(data.sweep_path)}</code></h3>"
        body += f'<pre id="sweep-file">{shown}</pre>' if shown else '<p class="note">the file was not found here</p>'
    elif not data.is_study:
        body += '<p class="muted">run folders, not a study: no sweep file or budget</p>'
    return _section("overview", "Study" if data.is_study else "Runs", body)


def _leaderboard_body(data: ReportData) -> str:
    intro = (
        f'<p class="muted">Every trial, best first by {escape(data.objective_names[0])}; '
        "click a column header to sort by it (again to reverse). The best trial is highlighted"
        + ("; Pareto members come first." if data.multi else ".")
        + "</p>"
    )
    return intro + leaderboard(data)


def _figure_section(figure: Figure, png_dir: str) -> str:
    return _section(figure.key, figure.title, _figure_body(figure, png_dir))


def _figure_body(figure: Figure, png_dir: str) -> str:
    """The plotly figure and a link to its PNG, or the note that says why there is none."""
    if figure.html is None:
        return f'<p class="note">{escape(figure.note or "not available")}</p>'
    link = f'<a class="png" href="{escape(png_dir)}/{escape(figure.png)}">PNG</a>' if figure.png else ""
    return f'<div class="figure">{figure.html}</div><p class="muted">{link}</p>'


def _best_section(best: BestTrial | None, png_dir: str) -> str:
    if best is None:
        return _section("best", "Best trial", '<p class="note">no completed trial yet</p>')
    lines = "".join(f"<li>{escape(line)}</li>" for line in best.lines)
    left = (
        f'<img class="confusion" id="confusion" alt="confusion matrix of trial {escape(best.label)}" '
        f'src="data:image/png;base64,{base64.b64encode(best.confusion_png).decode()}">'
        if best.confusion_png
        else '<p class="note">this run folder has no confusion.png</p>'
    )
    right = (
        per_class_table(best.per_class, best.roc)
        if best.per_class
        else '<p class="note">this run folder has no per_class.json</p>'
    )
    roc = ""
    if best.roc_figure is not None:
        roc = f'<div id="roc"><h3>{escape(best.roc_figure.title)}</h3>{_figure_body(best.roc_figure, png_dir)}</div>'
    body = (
        f'<ul>{lines}</ul><div class="row"><div><h3>Confusion matrix</h3>{left}</div>'
        f"<div><h3>Per class</h3>{right}</div></div>{roc}"
    )
    return _section("best", f"Best trial: {best.label}", body)


def _reproduce_section(data: ReportData) -> str:
    if not data.reproduce:
        return _section("reproduce", "Reproduce the best trial", '<p class="note">no completed trial yet</p>')
    what = (
        "Export the best trial's full config from the study and train it again (same seed and threads: "
        "the same validation metric on CPU)"
        if data.is_study
        else "Train the best run again from its resolved config"
    )
    if data.multi and data.pareto:
        what += f"; any other Pareto member with --trial N ({', '.join(map(str, data.pareto))})"
    commands = escape("\n".join(data.reproduce))
    return _section("reproduce", "Reproduce the best trial", f"<p>{what}:</p><pre>{commands}</pre>")
