"""``lakehouse report``: the HTML page opened in headless Chromium, screenshotted, and its figures read back
from the rendered page and compared with the run ledger and the quarantine tables."""

from __future__ import annotations

import shutil
import struct
import subprocess
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from lakehouse.backends.lake import Lake
from lakehouse.flows.report import quarantine_by_rule, refused_files
from lakehouse.tasks.ledger import read_ledger

pytestmark = pytest.mark.slow

DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Chromium is needed for this test: make test installs Debian's chromium (make system-deps)"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


class _Figures(HTMLParser):
    """The text of every element with a ``data-figure`` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.append(dict(attrs).get("data-figure"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        name = self._open[-1] if self._open else None
        if name:
            self.figures[name] = self.figures.get(name, "") + data.strip()


def _expected(ledger: list[dict], day: date) -> tuple[str, dict[str, int]]:
    """The latest run of ``day`` and its rows per layer, from the ledger (each task's latest attempt)."""
    run_id = max((r for r in ledger if r["run_date"] == day), key=lambda r: r["started_at"])["run_id"]
    latest: dict[str, dict] = {}
    for r in sorted((r for r in ledger if r["run_id"] == run_id), key=lambda r: r["started_at"]):
        latest[r["task"]] = r
    sums: dict[str, int] = {}
    for r in latest.values():
        layer = (r["table"] or "").split(".")[0]
        if layer in ("bronze", "silver", "gold"):
            for k in ("rows_in", "rows_out", "rows_quarantined"):
                sums[f"{layer}.{k}"] = sums.get(f"{layer}.{k}", 0) + (r[k] or 0)
    return run_id, sums


def test_the_report_shows_the_ledger_figures_in_a_browser(pristine_lake, tmp_path):
    from lakehouse.flows.cli import app

    root = pristine_lake["root"]
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--date", str(DAYS[-1]), "--lake-root", str(root), "--out", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained

    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", page.as_uri())
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1200, 1800)
    assert shot.stat().st_size > 30_000, "the screenshot is (nearly) blank"

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    parser = _Figures()
    parser.feed(dom)
    shown = parser.figures

    ledger = read_ledger(Lake(str(root)))
    run_id, sums = _expected(ledger, DAYS[-1])
    assert shown["run_id"] == run_id and shown["status"] == "completed"
    for name, value in sums.items():
        if name == "gold.rows_in":  # gold tables are built from silver tables, not fed rows
            assert shown[name] == "built from silver"
            continue
        assert shown[name] == f"{value:,}", name
    assert sums["silver.rows_in"] > 0 and sums["gold.rows_out"] > 0
    # Per table: the ledger's rows written.
    fact = next(r for r in ledger if r["run_id"] == run_id and r["table"] == "gold.fact_orders")
    assert shown["gold.fact_orders.rows_out"] == f"{fact['rows_out']:,}"
    # Each task's duration, as the ledger has it.
    for r in ledger:
        if r["run_id"] == run_id and r["table"] == "silver.orders":
            assert shown["silver.orders.duration_s"] == f"{r['duration_s']:.2f} s"
    # What happened: failed tasks, refused files and quarantined rows of the date, first.
    from lakehouse.backends.logs import refused_log
    from lakehouse.contracts.landing import LANDING_ENTITIES

    refused = {r["source_file"] for e in LANDING_ENTITIES
               for r in (refused_log(Lake(str(root)), e.source, e.entity).table() or pa.table({"run_date": []})).to_pylist()
               if r["run_date"] == DAYS[-1]}
    assert shown["summary.failed_tasks"] == "0"
    assert shown["summary.refused_files"] == str(len(refused)) == str(len(refused_files(Lake(str(root)), DAYS[-1])))
    assert html.index("What happened") < html.index("Rows per layer")
    total_quarantined = sum(q["rows"] for q in quarantine_by_rule(Lake(str(root)), DAYS[-1]))
    assert shown["summary.rows_quarantined"] == f"{total_quarantined:,}" and total_quarantined > 0
    # Quarantine by rule: the quarantine tables' rows of that run date.
    rows = DeltaTable(str(root / "quarantine" / "silver" / "orders")).to_pyarrow_table().to_pylist()
    by_rule: dict[str, int] = {}
    for r in rows:
        if r["run_date"] == DAYS[-1]:
            by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + 1
    assert by_rule
    for rule, n in by_rule.items():
        assert shown[f"quarantine.silver.orders.{rule}"] == f"{n:,}"
    # Trends: one row per run date, each matching that date's ledger figures.
    for day in DAYS:
        _, day_sums = _expected(ledger, day)
        share = day_sums["silver.rows_quarantined"] / day_sums["silver.rows_in"]
        assert shown[f"trend.{day}.silver_quarantine_share"] == f"{share:.2%}"
        assert shown[f"trend.{day}.gold.rows_out"] == f"{day_sums['gold.rows_out']:,}"


def test_a_date_without_runs_is_refused_clearly(pristine_lake, tmp_path):
    from lakehouse.flows.cli import app

    root = pristine_lake["root"]
    result = CliRunner().invoke(app, ["report", "--date", "2030-01-01", "--lake-root", str(root),
                                      "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert "2030-01-01" in result.output and "2026-11-02" in result.output.replace("\n", "")
    assert not (tmp_path / "x.html").exists()


def test_the_report_opens_with_the_days_incident(pristine_lake, tmp_path):
    """A refused file (as a run records it in the refused log) heads the page, and its table links to it."""
    import shutil
    from datetime import UTC, datetime

    from lakehouse.backends.logs import refused_log
    from lakehouse.flows.cli import app

    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    lake = Lake(str(root))
    reason = "expected column(s) ['page_views'], got ['pageviews'] (renamed?)"
    refused_log(lake, "redshift", "customer_behaviour").append([{
        "source_file": f"redshift/customer_behaviour/{DAYS[-1]}/customer_behaviour.csv",
        "problem": "schema.missing_column", "reason": reason, "run_id": "r1", "run_date": DAYS[-1],
        "refused_at": datetime.now(UTC)}])
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--date", str(DAYS[-1]), "--lake-root", str(root), "--out", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    story = html[html.index("What happened"):html.index("Landing files refused")]
    assert "schema.missing_column" in story and "page_views" in story
    assert "href='#refused-bronze-redshift-customer_behaviour'" in story
    assert "id='refused-bronze-redshift-customer_behaviour'" in html
    parser = _Figures()
    parser.feed(html)
    assert parser.figures["summary.refused_files"] == "1"
    tables = html[html.index("<h2>Tables</h2>"):]
    row = tables[tables.index("<td>bronze.redshift.customer_behaviour</td>"):].split("</tr>")[0]
    assert "class='warn'" in row and "1 file(s) refused" in row
