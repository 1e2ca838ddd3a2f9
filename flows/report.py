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

from lakehouse.backends.arrow_rows import python_rows
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
                  "version": r["version_written"]}
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
        log = refused_log(lake, entity.source, entity.entity).table()
        for r in (python_rows(log) if log is not None else []):
            if r["run_date"] == run_date and (r["source_file"] not in latest
                                              or r["refused_at"] > latest[r["source_file"]]["refused_at"]):
                latest[r["source_file"]] = r
    return [{"file": f, "problem": r["problem"], "reason": r["reason"]} for f, r in sorted(latest.items())]


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


def _page(lake: Lake, day: DayFigures, trend: list[DayFigures], quarantine: list[dict[str, Any]],
          refused: list[dict[str, Any]]) -> str:
    def e(value: Any) -> str:  # values from outside systems: HTML-escaped and inert if pasted into a spreadsheet
        return html.escape(inert(value))

    refused_rows = "".join(f"<tr><td>{e(r['file'])}</td><td>{e(r['problem'])}</td><td>{e(r['reason'])}</td></tr>"
                           for r in refused) or "<tr><td colspan='3'>no file refused</td></tr>"
    layer_rows = "".join(
        f"<tr><td>{layer}</td>" + _fig(f"{layer}.rows_in", _n(f["rows_in"])) + _fig(f"{layer}.rows_out", _n(f["rows_out"]))
        + _fig(f"{layer}.rows_quarantined", _n(f["rows_quarantined"])) + "</tr>"
        for layer, f in ((layer, day.layer(layer)) for layer in LAYERS))
    table_rows = "".join(
        f"<tr><td>{e(t['table'])}</td><td>{e(t['status'])}</td>" + _fig(f"{t['table']}.rows_in", _n(t["rows_in"]))
        + _fig(f"{t['table']}.rows_out", _n(t["rows_out"]))
        + _fig(f"{t['table']}.rows_quarantined", _n(t["rows_quarantined"])) + f"<td class='num'>{_n(t['version'])}</td></tr>"
        for t in day.tables)
    q_rows = "".join(f"<tr><td>{e(q['table'])}</td><td>{e(q['rule'])}</td>"
                     + _fig(f"quarantine.{q['table']}.{q['rule']}", _n(q["rows"])) + "</tr>" for q in quarantine) \
        or "<tr><td colspan='3'>nothing quarantined</td></tr>"
    share_points = [(str(f.run_date), _share(f.layer("silver")["rows_quarantined"], f.layer("silver")["rows_in"]))
                    for f in trend]
    written = {layer: [(str(f.run_date), float(f.layer(layer)["rows_out"])) for f in trend] for layer in LAYERS}
    trend_rows = "".join(
        f"<tr><td>{f.run_date}</td><td>{e(f.status)}</td>"
        + _fig(f"trend.{f.run_date}.silver_quarantine_share", f"{share:.2%}")
        + "".join(_fig(f"trend.{f.run_date}.{layer}.rows_out", _n(f.layer(layer)["rows_out"])) for layer in LAYERS)
        + "</tr>"
        for f, (_, share) in zip(trend, share_points, strict=True))
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
.charts {{ display: flex; gap: 24px; flex-wrap: wrap; }}
</style></head><body>
<h1>Lakehouse report for {day.run_date}</h1>
<p class="meta">lake {e(lake.root)} · run <code data-figure="run_id">{e(day.run_id)}</code> ·
status <span class="{e(day.status)}" data-figure="status">{e(day.status)}</span> · generated {generated}</p>
<h2>Rows per layer</h2>
<table><tr><th>layer</th><th>rows in</th><th>rows written</th><th>quarantined</th></tr>{layer_rows}</table>
<h2>Landing files refused (nothing of them ingested)</h2>
<table><tr><th>file</th><th>problem</th><th>reason</th></tr>{refused_rows}</table>
<h2>Quarantine by rule</h2>
<table><tr><th>table</th><th>rule</th><th>rows</th></tr>{q_rows}</table>
<h2>Quality over the last {len(trend)} run date(s)</h2>
<div class="charts">
{_bar_chart("Silver rows quarantined (share of rows in)", share_points)}
{_line_chart("Rows written per layer", written)}
</div>
<table><tr><th>run date</th><th>status</th><th>silver quarantined</th>
{"".join(f"<th>{layer} rows written</th>" for layer in LAYERS)}</tr>{trend_rows}</table>
<h2>Tables</h2>
<table><tr><th>table</th><th>status</th><th>rows in</th><th>rows written</th><th>quarantined</th><th>version</th></tr>
{table_rows}</table>
</body></html>
"""


_W, _H, _PAD = 460, 220, 40
_COLOURS = {"bronze": "#b7791f", "silver": "#718096", "gold": "#d69e2e"}


def _bar_chart(title: str, points: list[tuple[str, float]]) -> str:
    """Bars of shares (0..1), one per run date."""
    top = max((v for _, v in points), default=0.0) or 1.0
    width = (_W - 2 * _PAD) / max(len(points), 1)
    bars = []
    for i, (label, value) in enumerate(points):
        h = (_H - 2 * _PAD) * value / top
        x, y = _PAD + i * width + 2, _H - _PAD - h
        text = f"{value:.1%}"
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 4, 1):.1f}" height="{h:.1f}" fill="#3182ce">'
                    f"<title>{html.escape(label)}: {text}</title></rect>"
                    f'<text x="{x + width / 2 - 2:.1f}" y="{_H - _PAD + 14}" font-size="9" text-anchor="middle">'
                    f"{html.escape(label[5:])}</text>")
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}"><line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" '
            f'stroke="#888"/><text x="4" y="{_PAD}" font-size="10">{top:.1%}</text>{"".join(bars)}</svg></figure>')


def _line_chart(title: str, series: dict[str, list[tuple[str, float]]]) -> str:
    top = max((v for pts in series.values() for _, v in pts), default=0.0) or 1.0
    n = max((len(pts) for pts in series.values()), default=1)
    step = (_W - 2 * _PAD) / max(n - 1, 1)
    lines, legend = [], []
    for k, (layer, pts) in enumerate(series.items()):
        coords = " ".join(f"{_PAD + i * step:.1f},{_H - _PAD - (_H - 2 * _PAD) * v / top:.1f}"
                          for i, (_, v) in enumerate(pts))
        lines.append(f'<polyline fill="none" stroke="{_COLOURS[layer]}" stroke-width="2" points="{coords}"/>')
        lines += [f'<circle cx="{_PAD + i * step:.1f}" cy="{_H - _PAD - (_H - 2 * _PAD) * v / top:.1f}" r="3" '
                  f'fill="{_COLOURS[layer]}"><title>{layer} {html.escape(d)}: {v:,.0f}</title></circle>'
                  for i, (d, v) in enumerate(pts)]
        legend.append(f'<text x="{_PAD + k * 80}" y="14" font-size="11" fill="{_COLOURS[layer]}">{layer}</text>')
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}"><line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" '
            f'stroke="#888"/><text x="4" y="{_PAD}" font-size="10">{top:,.0f}</text>{"".join(legend)}'
            f'{"".join(lines)}</svg></figure>')
