"""The run ledger and OpenLineage events every data task leaves (tasks/tracking.py), and ``lakehouse status``."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import table
from lakehouse.contracts.logs import log
from lakehouse.tasks.ledger import freshness, read_ledger, runs_overview
from lakehouse.tasks.lineage import lineage_events

pytestmark = pytest.mark.slow

DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
# One run of the daily flow: 9 landing entities, bronze gate, 9 silver tables, links, silver gate, gold plan,
# 7 gold tables, release.
TASKS_PER_RUN = 9 + 1 + 9 + 1 + 1 + 1 + 7 + 1


@pytest.fixture
def polars_lake(pristine_lake):
    return pristine_lake


def _ledger(root) -> list[dict]:
    return read_ledger(Lake(str(root)))


def test_every_task_of_every_run_has_a_ledger_row_that_matches_its_summary_and_the_lake(polars_lake):
    rows = _ledger(polars_lake["root"])
    runs = runs_overview(rows)
    assert [r["run_date"] for r in runs] == list(reversed(DAYS))
    assert all(r["status"] == "completed" and r["tasks"] == TASKS_PER_RUN for r in runs)
    assert len(rows) == TASKS_PER_RUN * len(DAYS)
    assert {r["engine"] for r in rows} == {"polars"} and {r["status"] for r in rows} == {"completed"}
    assert all(r["duration_s"] > 0 for r in rows)
    for day in DAYS:
        mine = {r["table"]: r for r in rows if r["run_date"] == day and r["version_written"] is not None}
        for s in polars_lake["summaries"][day]:
            if s["stage"] == "release":
                continue
            row = mine[s["table"]]
            assert row["rows_out"] == s["rows_written"], s["table"]
            assert row["version_written"] == s["version"], s["table"]
            assert row["rows_quarantined"] == s.get("quarantined"), s["table"]
            assert row["rows_in"] == s.get("rows_in"), s["table"]
        # Versions read are the lake's: the fact read the dim_customer version this run had just written.
        fact = json.loads(mine["gold.fact_orders"]["versions_read"])
        assert fact["gold.dim_customer"] == mine["gold.dim_customer"]["version_written"]
        assert fact["silver.orders"] == mine["silver.orders"]["version_written"]
    # Freshness: the latest write of each table is the second day's, at the lake's current version.
    fresh = freshness(rows)
    for name in ("silver.orders", "gold.fact_orders", "gold.customer_360"):
        assert fresh[name]["run_date"] == DAYS[-1]
        assert fresh[name]["version"] == DeltaTable(str(polars_lake["root"] / table(name).path)).version()


def test_lineage_events_pair_start_with_complete_and_carry_datasets_schemas_and_counts(polars_lake):
    rows = _ledger(polars_lake["root"])
    events = lineage_events(Lake(str(polars_lake["root"])))
    by_run: dict[str, list[dict]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"], []).append(e)
    assert set(by_run) == {r["task_run_id"] for r in rows}
    assert all([e["eventType"] for e in evs] == ["START", "COMPLETE"] for evs in by_run.values())
    fact_row = next(r for r in rows if r["table"] == "gold.fact_orders" and r["run_date"] == DAYS[-1])
    start, complete = by_run[fact_row["task_run_id"]]
    assert (complete["job"]["namespace"], complete["job"]["name"]) == ("lakehouse",
                                                                        "daily-lakehouse.gold-gold.fact_orders")
    (out,) = complete["outputs"]
    assert out["namespace"] == "file"
    written_at = polars_lake["written_at"]  # lineage names where the runs wrote
    assert out["name"] == str((written_at / "gold" / "fact_orders").resolve())
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == table("gold.fact_orders").columns
    assert out["facets"]["version"]["datasetVersion"] == str(fact_row["version_written"])
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == fact_row["rows_out"]
    read = json.loads(fact_row["versions_read"])
    inputs = {i["name"]: i for i in complete["inputs"]}
    assert {str((written_at / table(n).path).resolve()) for n in read} == set(inputs)
    orders = inputs[str((written_at / "silver" / "orders").resolve())]
    assert orders["facets"]["version"]["datasetVersion"] == str(read["silver.orders"])
    # The task's run points at the flow run it ran in.
    assert complete["run"]["facets"]["parent"]["job"]["name"] == "daily-lakehouse"
    assert start["eventTime"] <= complete["eventTime"]


def test_a_failing_task_leaves_a_failed_ledger_row_and_a_fail_event_and_the_rows_before_it(
        polars_lake, tmp_path, monkeypatch):
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks.transforms import gold

    root = tmp_path / "lake"
    shutil.copytree(polars_lake["root"], root)
    before = len(_ledger(root))

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in customer_360")

    monkeypatch.setattr(gold, "build_customer_360", broken)
    state = daily_lakehouse(run_date=DAYS[-1], lake_root=str(root), landing_root=str(polars_lake["landing"]),
                            force=True, return_state=True)
    assert state.is_failed()
    rows = _ledger(root)[before:]
    failed = [r for r in rows if r["status"] == "failed"]
    attempts = 1  # not a transient error (tasks/retry_policy.py): Prefect did not retry it
    assert [r["task"] for r in failed] == ["gold-gold.customer_360"] * attempts
    assert len({r["task_run_id"] for r in failed}) == 1
    assert all("injected failure in customer_360" in r["error"] for r in failed)
    done = {r["task"] for r in rows if r["status"] == "completed"}
    assert {"bronze-snowflake.orders", "silver-silver.orders", "gold-gold.fact_orders"} <= done
    assert "release-gold" not in done  # the run stopped at the failure
    (run,) = runs_overview(rows)
    assert run["status"] == "failed" and run["failed_tasks"] == ["gold-gold.customer_360"]
    events = [e for e in lineage_events(Lake(str(root))) if e["run"]["runId"] == failed[0]["task_run_id"]]
    assert [e["eventType"] for e in events] == ["START", "FAIL"] * attempts
    assert "injected failure" in events[-1]["run"]["facets"]["errorMessage"]["message"]


class _Receiver(BaseHTTPRequestHandler):
    """A Marquez-compatible lineage endpoint on loopback: keeps every POSTed event; answers 503 when told to."""

    events: ClassVar[list[dict]] = []
    fail_first: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        assert self.path == "/api/v1/lineage"
        type(self).events.append(json.loads(body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_lineage_goes_to_an_http_receiver_from_settings_and_is_retried(polars_lake, tmp_path, monkeypatch):
    from lakehouse.deployments.settings import cached_settings
    from lakehouse.flows.daily import daily_lakehouse

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Receiver.events, _Receiver.fail_first = [], 2  # the first event is refused twice, then accepted
        monkeypatch.setenv("LAKEHOUSE_LINEAGE__TRANSPORT", "http")
        monkeypatch.setenv("LAKEHOUSE_LINEAGE__URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("LAKEHOUSE_LINEAGE__RETRIES", "3")
        cached_settings.cache_clear()
        root = tmp_path / "lake"
        shutil.copytree(polars_lake["root"], root)
        before = len(_ledger(root))
        daily_lakehouse(run_date=DAYS[-1], lake_root=str(root), landing_root=str(polars_lake["landing"]), force=True)
    finally:
        server.shutdown()
        cached_settings.cache_clear()
    rows = _ledger(root)[before:]
    assert len(rows) == TASKS_PER_RUN
    received: dict[str, list[str]] = {}
    for e in _Receiver.events:
        received.setdefault(e["run"]["runId"], []).append(e["eventType"])
    assert received == {r["task_run_id"]: ["START", "COMPLETE"] for r in rows}
    # Nothing went to the lake's file transport for this run.
    assert not {e["run"]["runId"] for e in lineage_events(Lake(str(root)))} & set(received)


def test_status_shows_recent_runs_and_table_freshness(polars_lake):
    from lakehouse.flows.cli import app

    result = CliRunner().invoke(app, ["status", "--lake-root", str(polars_lake["root"])])
    assert result.exit_code == 0, result.output
    rows = _ledger(polars_lake["root"])
    for run in runs_overview(rows):
        line = next(x for x in result.output.splitlines() if run["run_id"] in x)
        assert "completed" in line and str(run["run_date"]) in line and f" {run['rows_written']:,} " in line
    fact = freshness(rows)["gold.fact_orders"]
    line = next(x for x in result.output.splitlines() if "gold.fact_orders" in x)
    assert str(fact["run_date"]) in line and f" {fact['version']} " in line


def test_status_without_a_ledger_says_what_to_do(tmp_path):
    from lakehouse.flows.cli import app

    result = CliRunner().invoke(app, ["status", "--lake-root", str(tmp_path / "empty")])
    assert result.exit_code == 2
    flat = result.output.replace("\n", "")
    assert log("ledger").path in flat and "lakehouse run --date D" in flat


@pytest.mark.parametrize("engine", ["polars", "sail"])
def test_a_task_that_quarantined_rows_is_not_a_plain_completed_in_prefect(sample_landing, engine, prefect_harness,
                                                                          request, tmp_path):
    """The daily flow's task runs, as the Prefect server has them: the ones that quarantined rows end in a
    Completed state named Quarantined, with counts and rules in its message; clean ones stay Completed. (The
    stages run here: the shared lakes may have been built by another test process, against its own server.)"""
    import asyncio
    from datetime import UTC, datetime
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from lakehouse.flows.daily import ingest, refine
    from lakehouse.tasks.context import RunContext

    spark = {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")} if engine == "sail" else {}
    root = tmp_path / "lake"
    ctx = RunContext(run_date=DAYS[0], run_id="quarantine-states", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(root), "landing_root": str(sample_landing()), **spark})
    summaries = ingest(ctx) + refine(ctx)  # the stages that quarantine, as Prefect flows of their own
    quarantined = {s["table"] for s in summaries if s.get("quarantined")}
    clean = {s["table"] for s in summaries if s["stage"] in ("bronze", "silver") and not s.get("quarantined")
             and not s.get("refused")}
    assert "silver.orders" in quarantined and clean
    ledger = [r for r in _ledger(root) if r["level"] == "task"]
    task_runs = {r["table"]: r["task_run_id"] for r in ledger if r["table"] in quarantined | clean}

    async def states() -> dict[str, object]:
        async with get_client() as client:
            return {name: (await client.read_task_run(UUID(tid))).state for name, tid in task_runs.items()}

    by_table = asyncio.run(states())
    orders = by_table["silver.orders"]
    assert orders.type.value == "COMPLETED" and orders.name == "Quarantined"
    rows = next(s for s in summaries if s["table"] == "silver.orders")["quarantined"]
    assert f"{rows:,} row(s) quarantined" in orders.message and "silver.orders" in orders.message
    for name in clean:
        assert by_table[name].name == "Completed", name
