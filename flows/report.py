"""``lakehouse report --date D``: one self-contained HTML page about a run date, from the run ledger and the
quarantine tables: rows per layer, rows per table, quarantine by rule, and quality trends over the recent run
dates as inline SVG charts (no script, no external file, so it can be mailed or attached to a ticket).

Every figure the page shows carries ``data-figure="<name>"`` so a test (or a script) can read it back and compare
it with the ledger.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import quarantine_for, tables
from lakehouse.flows.display import inert
from lakehouse.tasks.ledger import read_ledger

LAYERS = ("bronze", "silver", "gold")
TREND_DATES = 14


@dataclass(frozen=True)
class DayFigures:
    """What a run date's latest run did: per table and per layer, rows in, written and quarantined."""

    run_date: date
    run_id: str
    status: str
    tables: list[dict[str, Any]]

    def layer(self, layer: str) -> dict[str, int]:
        mine = [t for t in self.tables if t["table"].startswith(f"{layer}.")]
        return {k: sum(t[k] or 0 for t in mine) for k in ("rows_in", "rows_out", "rows_quarantined")}


def day_figures(ledger: list[dict[str, Any]], run_date: date) -> DayFigures | None:
    """The figures of the latest run of ``run_date`` in the ledger: each task's latest attempt."""
    runs = [r for r in ledger if r["run_date"] == run_date]
    if not runs:
        return None
    run_id = max(runs, key=lambda r: r["started_at"])["run_id"]
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted((r for r in runs if r["run_id"] == run_id), key=lambda r: r["started_at"]):
        latest[r["task"]] = r
    status = "failed" if any(r["status"] == "failed" for r in latest.values()) else "completed"
    per_table = [{"table": r["table"], "task": r["task"], "status": r["status"], "rows_in": r["rows_in"],
                  "rows_out": r["rows_out"], "rows_quarantined": r["rows_quarantined"],
                  "version": r["version_written"], "duration_s": r["duration_s"], "error": r["error"]}
                 for r in latest.values() if r["table"] and r["table"].split(".")[0] in LAYERS]
    return DayFigures(run_date, run_id, status, sorted(per_table, key=lambda t: (LAYERS.index(
        t["table"].split(".")[0]), t["table"])))


def quarantine_by_rule(lake: Lake, run_date: date) -> list[dict[str, Any]]:
    """Rows quarantined for ``run_date`` per table and rule, most first."""
    out = []
    for layer in ("bronze", "silver"):
        for spec in tables(layer):  # type: ignore[arg-type]
            try:
                q = quarantine_for(spec)
            except KeyError:  # a table fed by another's conform (customer_versions): no quarantine of its own
                continue
            dt = lake.delta_table(q)
            if dt is None:
                continue
            counts = (pl.scan_delta(dt).filter(pl.col("run_date") == run_date).group_by("rule").len()
                      .collect())
            out += [{"table": spec.name, "rule": rule, "rows": n} for rule, n in counts.iter_rows()]
    return sorted(out, key=lambda r: (-r["rows"], r["table"], r["rule"]))


def refused_files(lake: Lake, run_date: date) -> list[dict[str, Any]]:
    """Landing files refused by runs of ``run_date`` (the latest refusal of each): file, problem, reason."""
    from lakehouse.backends.logs import refused_log
    from lakehouse.contracts.landing import LANDING_ENTITIES

    latest: dict[str, dict[str, Any]] = {}
    for entity in LANDING_ENTITIES:
        for r in refused_log(lake, entity.source, entity.entity).rows():
            if r["run_date"] == run_date and (r["source_file"] not in latest
                                              or r["refused_at"] > latest[r["source_file"]]["refused_at"]):
                latest[r["source_file"]] = {**r, "table": f"bronze.{entity.source}.{entity.entity}"}
    return [{"file": f, "table": r["table"], "problem": r["problem"], "reason": r["reason"]}
            for f, r in sorted(latest.items())]


def render(lake: Lake, run_date: date, *, trend_dates: int = TREND_DATES) -> str:
    """The report page for ``run_date`` (an error if the ledger has no run of it)."""
    ledger = read_ledger(lake)
    day = day_figures(ledger, run_date)
    if day is None:
        known = sorted({r["run_date"] for r in ledger})
        msg = (f"expected a run of {run_date} in the run ledger of {lake.root}, found none; dates with runs: "
               f"{', '.join(str(d) for d in known[-10:]) or 'none'}")
        raise LookupError(msg)
    dates = sorted({r["run_date"] for r in ledger if r["run_date"] <= run_date})[-trend_dates:]
    trend = [f for f in (day_figures(ledger, d) for d in dates) if f is not None]
    quarantine = quarantine_by_rule(lake, run_date)
    return _page(lake, day, trend, quarantine, refused_files(lake, run_date))


# ------------------------------------------------------------------------------------------------ HTML
def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _fig(name: str, text: str) -> str:
    return f'<td class="num" data-figure="{html.escape(name)}">{html.escape(text)}</td>'


def _share(quarantined: int, rows_in: int) -> float:
    return quarantined / rows_in if rows_in else 0.0


def _anchor(kind: str, table: str) -> str:
    return f"{kind}-{table.replace('.', '-')}"


def _page(lake: Lake, day: DayFigures, trend: list[DayFigures], quarantine: list[dict[str, Any]],
          refused: list[dict[str, Any]]) -> str:
    def e(value: Any) -> str:  # values from outside systems: HTML-escaped and inert if pasted into a spreadsheet
        return html.escape(inert(value))

    failed = [t for t in day.tables if t["status"] == "failed"]
    quarantined = sum(q["rows"] for q in quarantine)
    refused_by_table: dict[str, int] = {}
    for r in refused:
        refused_by_table[r["table"]] = refused_by_table.get(r["table"], 0) + 1
    quarantined_tables = {q["table"] for q in quarantine}

    # What happened, most serious first: failed tasks (a gate, an audit, an error), refused files, quarantine.
    story = [f"<li class='failed'>{e(t['task'])} failed: {e(t['error'] or 'see the Prefect run')}</li>" for t in failed]
    story += [f"<li class='warn'><a href='#{_anchor('refused', r['table'])}'>{e(r['table'])}</a>: landing file "
              f"<code>{e(r['file'])}</code> refused ({e(r['problem'])}): {e(r['reason'])}; nothing of it ingested</li>"
              for r in refused]
    if quarantine:
        top = ", ".join(f"<a href='#{_anchor('quarantine', q['table'])}'>{e(q['table'])}</a> {e(q['rule'])} "
                        f"({q['rows']:,})" for q in quarantine[:3])
        story.append(f"<li>{quarantined:,} rows quarantined in {len(quarantined_tables)} table(s); most: {top}</li>")
    if not story:
        story.append("<li class='completed'>every task completed; no file refused, no row quarantined</li>")
    summary = (f"<p class='meta'><span data-figure='summary.failed_tasks'>{len(failed)}</span> failed task(s) · "
               f"<span data-figure='summary.refused_files'>{len(refused)}</span> refused file(s) · "
               f"<span data-figure='summary.rows_quarantined'>{quarantined:,}</span> rows quarantined</p>")

    refused_rows = "".join(
        f"<tr id='{_anchor('refused', r['table'])}'><td>{e(r['table'])}</td><td>{e(r['file'])}</td>"
        f"<td>{e(r['problem'])}</td><td>{e(r['reason'])}</td></tr>"
        for r in refused) or "<tr><td colspan='4'>no file refused</td></tr>"

    def rows_in(layer: str, value: int | None) -> str:  # gold is built from silver tables, not fed rows
        return "built from silver" if layer == "gold" else _n(value)

    layer_rows = "".join(
        f"<tr><td>{layer}</td>" + _fig(f"{layer}.rows_in", rows_in(layer, f["rows_in"]))
        + _fig(f"{layer}.rows_out", _n(f["rows_out"])) + _fig(f"{layer}.rows_quarantined", _n(f["rows_quarantined"]))
        + "</tr>"
        for layer, f in ((layer, day.layer(layer)) for layer in LAYERS))

    def status_cell(t: dict[str, Any]) -> str:
        notes = []
        if refused_by_table.get(t["table"]):
            notes.append(f"<a href='#{_anchor('refused', t['table'])}'>{refused_by_table[t['table']]} file(s) refused</a>")
        if t["table"] in quarantined_tables:
            notes.append(f"<a href='#{_anchor('quarantine', t['table'])}'>{_n(t['rows_quarantined'])} quarantined</a>")
        cls = "failed" if t["status"] == "failed" else ("warn" if notes else "completed")
        return f"<td class='{cls}'>{e(t['status'])}{' · ' + ' · '.join(notes) if notes else ''}</td>"

    table_rows = "".join(
        f"<tr><td>{e(t['table'])}</td>{status_cell(t)}"
        + _fig(f"{t['table']}.rows_in", rows_in(t["table"].split(".")[0], t["rows_in"]))
        + _fig(f"{t['table']}.rows_out", _n(t["rows_out"]))
        + _fig(f"{t['table']}.rows_quarantined", _n(t["rows_quarantined"]))
        + _fig(f"{t['table']}.duration_s", f"{t['duration_s']:.2f} s") + f"<td class='num'>{_n(t['version'])}</td></tr>"
        for t in day.tables)
    seen: set[str] = set()
    q_rows = ""
    for q in quarantine:
        anchor = "" if q["table"] in seen else f" id='{_anchor('quarantine', q['table'])}'"
        seen.add(q["table"])
        q_rows += (f"<tr{anchor}><td>{e(q['table'])}</td><td>{e(q['rule'])}</td>"
                   + _fig(f"quarantine.{q['table']}.{q['rule']}", _n(q["rows"])) + "</tr>")
    q_rows = q_rows or "<tr><td colspan='3'>nothing quarantined</td></tr>"
    share_points = [(str(f.run_date), _share(f.layer("silver")["rows_quarantined"], f.layer("silver")["rows_in"]))
                    for f in trend]
    trend_rows = "".join(
        f"<tr><td>{f.run_date}</td><td>{e(f.status)}</td>"
        + _fig(f"trend.{f.run_date}.silver_quarantine_share", f"{share:.2%}")
        + "".join(_fig(f"trend.{f.run_date}.{layer}.rows_out", _n(f.layer(layer)["rows_out"])) for layer in LAYERS)
        + "</tr>"
        for f, (_, share) in zip(trend, share_points, strict=True))
    written = "".join(_line_chart(f"{layer.capitalize()} rows written per run date",
                                  [(str(f.run_date), float(f.layer(layer)["rows_out"])) for f in trend],
                                  _COLOURS[layer]) for layer in LAYERS)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Lakehouse report {day.run_date}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2329; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; }}
th {{ background: #f3f5f7; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.meta {{ color: #57606a; }} .failed {{ color: #b42318; font-weight: 600; }} .completed {{ color: #1a7f37; }}
.warn {{ color: #9a6700; }} ul.story li {{ margin: 4px 0; }}
.charts {{ display: flex; gap: 24px; flex-wrap: wrap; }} figcaption {{ font-weight: 600; }}
</style></head><body>
<h1>Lakehouse report for {day.run_date}</h1>
<p class="meta">lake {e(lake.root)} · run <code data-figure="run_id">{e(day.run_id)}</code> ·
status <span class="{e(day.status)}" data-figure="status">{e(day.status)}</span> · generated {generated}</p>
<h2>What happened</h2>
{summary}
<ul class="story">{"".join(story)}</ul>
<h2>Landing files refused (nothing of them ingested)</h2>
<table><tr><th>table</th><th>file</th><th>problem</th><th>reason</th></tr>{refused_rows}</table>
<h2>Quarantine by rule</h2>
<table><tr><th>table</th><th>rule</th><th>rows</th></tr>{q_rows}</table>
<h2>Rows per layer</h2>
<table><tr><th>layer</th><th>rows in</th><th>rows written</th><th>quarantined</th></tr>{layer_rows}</table>
<h2>Tables</h2>
<table><tr><th>table</th><th>status</th><th>rows in</th><th>rows written</th><th>quarantined</th><th>took</th>
<th>version</th></tr>
{table_rows}</table>
<h2>Quality over the last {len(trend)} run date(s)</h2>
<div class="charts">
{_bar_chart("Silver rows quarantined, share of rows in", share_points)}
{written}
</div>
<table><tr><th>run date</th><th>status</th><th>silver quarantined</th>
{"".join(f"<th>{layer} rows written</th>" for layer in LAYERS)}</tr>{trend_rows}</table>
</body></html>
"""


_W, _H = 420, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 40
_COLOURS = {"bronze": "#9c4221", "silver": "#4a5568", "gold": "#b7791f"}


def _axes(top: float, labels: list[str], fmt: str, x_of: Any) -> str:
    """A y axis from 0 to ``top`` with three ticks (formatted by ``fmt``), and the run dates under the x axis."""
    plot_h = _H - _TOP - _BOTTOM
    parts = [f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}" stroke="#555"/>',
             f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" y2="{_H - _BOTTOM}" stroke="#555"/>']
    for frac in (0.0, 0.5, 1.0):
        y = _H - _BOTTOM - plot_h * frac
        parts.append(f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#e1e4e8"/>'
                     f'<text x="{_LEFT - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
                     f"{format(top * frac, fmt)}</text>")
    for i, label in enumerate(labels):
        parts.append(f'<text x="{x_of(i):.1f}" y="{_H - _BOTTOM + 14}" font-size="10" text-anchor="middle">'
                     f"{html.escape(label[5:])}</text>")
    parts.append(f'<text x="{(_LEFT + _W - _RIGHT) / 2:.1f}" y="{_H - 6}" font-size="10" text-anchor="middle" '
                 'fill="#57606a">run date</text>')
    return "".join(parts)


def _bar_chart(title: str, points: list[tuple[str, float]]) -> str:
    """Bars of shares (0..1), one per run date, on a y axis from 0 to the largest share."""
    top = max((v for _, v in points), default=0.0) or 0.01
    width = (_W - _LEFT - _RIGHT) / max(len(points), 1)
    plot_h = _H - _TOP - _BOTTOM
    bars = []
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x, y = _LEFT + i * width + width * 0.15, _H - _BOTTOM - h
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.7:.1f}" height="{h:.1f}" fill="#3182ce">'
                    f"<title>{html.escape(label)}: {value:.2%}</title></rect>"
                    f'<text x="{x + width * 0.35:.1f}" y="{y - 3:.1f}" font-size="10" text-anchor="middle">'
                    f"{value:.2%}</text>")
    axes = _axes(top, [label for label, _ in points], ".1%", lambda i: _LEFT + (i + 0.5) * width)
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}">{axes}{"".join(bars)}</svg></figure>')


def _line_chart(title: str, points: list[tuple[str, float]], colour: str) -> str:
    """One series per chart (each layer on its own scale, so no two lines hide each other), with its axes."""
    top = max((v for _, v in points), default=0.0) or 1.0
    step = (_W - _LEFT - _RIGHT) / max(len(points), 1)
    plot_h = _H - _TOP - _BOTTOM

    def x_of(i: int) -> float:
        return _LEFT + (i + 0.5) * step

    xy = [(x_of(i), _H - _BOTTOM - plot_h * v / top, d, v) for i, (d, v) in enumerate(points)]
    line = (f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in xy)}"/>')
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>{html.escape(d)}: {v:,.0f}'
                   f"</title></circle>" for x, y, d, v in xy)
    axes = _axes(top, [d for d, _ in points], ",.0f", x_of)
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}">{axes}{line}{dots}</svg></figure>')
