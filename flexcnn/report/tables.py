"""The page's tables: the leaderboard of every trial and the best trial's per-class metrics.

Cells carry their sort key in ``data-v`` (a number, or empty for "no value", which sorts last);
the few lines of JavaScript in ``SORT_JS`` sort a table by the header clicked.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from flexcnn.report.data import ReportData
from flexcnn.report.records import TrialRecord, format_value, metric_columns

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var cell = row.cells[col];
        var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
        return v === "" ? null : (isNaN(Number(v)) ? v : Number(v));
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }  // empty cells last
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return up ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def ranked(data: ReportData) -> list[TrialRecord]:
    """Records best first: completed ones by objective (Pareto members first), then the others by number."""

    def key(r: TrialRecord) -> tuple[int, int, float, int]:
        if r.state != "COMPLETE" or not r.values or not all(math.isfinite(v) for v in r.values):
            return (2, 0, 0.0, r.number)
        sign = -1.0 if data.directions[0] == "maximize" else 1.0
        off_front = 1 if data.multi and r.number not in data.pareto else 0
        return (0, off_front, sign * r.values[0], r.number)

    return sorted(data.records, key=key)


def leaderboard(data: ReportData) -> str:
    """Every trial: rank, trial, state, objectives, validation and test metrics, epochs, seconds, parameters."""
    rows = ranked(data)
    metrics = [m for m in metric_columns(rows) if m not in data.objective_names]
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    folders = not data.is_study
    head = ["rank", "trial", *(["run folder"] if folders else []), "state", *data.objective_names]
    head += [*metrics, "epochs", "best epoch", "seconds", *params]
    body = []
    for rank, r in enumerate(rows, start=1):
        complete = r.state == "COMPLETE"
        cells = [_num(rank if complete else None, str(rank) if complete else "-"), _num(r.number)]
        if folders:
            cells.append(_text(r.label))
        state = r.state + (" (Pareto)" if r.number in data.pareto else "")
        cells.append(f'<td class="state {r.state.lower()}" title="{escape(r.reason or r.note or "")}">{state}</td>')
        values = r.values or []
        cells += [_num(values[k] if k < len(values) else None) for k in range(len(data.objective_names))]
        cells += [_num(r.metrics.get(m)) for m in metrics]
        planned = f"/{r.planned_epochs}" if r.planned_epochs else ""
        cells.append(_num(r.epochs if r.history or r.metrics else None, f"{r.epochs}{planned}"))
        cells += [_num(r.best_epoch), _num(r.seconds, f"{r.seconds:.1f}" if r.seconds is not None else None)]
        cells += [_param(r.params.get(p)) for p in params]
        best = ' class="best"' if data.best is not None and r.number == data.best.number else ""
        body.append(f'<tr id="trial-{r.number}"{best}>{"".join(cells)}</tr>')
    return _table("leaderboard", head, body)


def per_class_table(per_class: dict[str, Any], roc: dict[str, Any] | None) -> str:
    """Precision, recall, F1, support (and AUROC when roc.json has it) of each class."""
    auroc = (roc or {}).get("auroc") or {}
    head = ["class", "precision", "recall", "F1", *(["AUROC"] if auroc else []), "support"]
    body = []
    for name, row in per_class.items():
        cells = [_text(name), _num(row.get("precision")), _num(row.get("recall")), _num(row.get("f1"))]
        if auroc:
            cells.append(_num(auroc.get(name)))
        cells.append(_num(row.get("support")))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _table("per-class", head, body)


def _table(table_id: str, head: list[str], body: list[str]) -> str:
    header = "".join(f'<th title="sort by {escape(h)}">{escape(h)}</th>' for h in head)
    return (
        f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _num(value: Any, shown: str | None = None) -> str:
    """A numeric cell: sorts by the number, shows ``shown`` (or the number, 4 decimals for fractions)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return '<td class="num" data-v="">-</td>'
    if shown is None:
        shown = str(value) if isinstance(value, int) else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return f'<td class="num" data-v="{value!r}">{escape(shown)}</td>'


def _text(value: Any) -> str:
    return f'<td data-v="{escape(str(value))}">{escape(str(value))}</td>'


def _param(value: Any) -> str:
    if value is None:
        return '<td data-v="">-</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num" data-v="{value!r}">{escape(format_value(value))}</td>'
    return _text(format_value(value))
