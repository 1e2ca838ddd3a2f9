"""Quality gates: a silver table whose run quarantined more than its declared share of rows stops the flow
before gold; the run fails with a readable reason and a table artifact of the failing rules with sample rows.
On both engines."""

from __future__ import annotations

import json
import shutil
from datetime import date

import polars as pl
import pytest
from conftest import FLOW_DAYS

from lakehouse.backends import Lake
from lakehouse.backends.releases import Releases
from lakehouse.contracts.catalog import TABLES, Gate, table
from lakehouse.tasks.gates import gate_failures
from lakehouse.testing import DELTA_ENGINES

pytestmark = pytest.mark.slow


def test_every_silver_table_declares_a_gate():
    for spec in TABLES.values():
        if spec.layer == "silver":
            assert 0 < spec.gate.max_quarantine_rate < 1 and spec.gate.min_rows > 0, spec.name


def test_the_gate_fails_above_the_rate_and_judges_small_batches_by_a_looser_share():
    gate = Gate(max_quarantine_rate=0.05, min_rows=100, small_batch_max_share=0.25)
    s = {"stage": "silver", "table": "silver.customers"}
    assert gate_failures([{**s, "rows_in": 1000, "quarantined": 50}], {"silver.customers": gate}) == []
    failed = gate_failures([{**s, "rows_in": 1000, "quarantined": 51}], {"silver.customers": gate})
    assert [(f["table"], f["rows_in"], f["quarantined"]) for f in failed] == [("silver.customers", 1000, 51)]
    # a small batch: one bad row of 20 passes, a third of an FX day's 54 rates fails
    assert gate_failures([{**s, "rows_in": 20, "quarantined": 1}], {"silver.customers": gate}) == []
    assert gate_failures([{**s, "rows_in": 8, "quarantined": 2}], {"silver.customers": gate}) == []
    failed = gate_failures([{**s, "rows_in": 54, "quarantined": 18}], {"silver.customers": gate})
    assert [(f["rows_in"], f["quarantined"], f["limit"]) for f in failed] == [(54, 18, 0.25)]
    assert gate_failures([{"stage": "silver", "table": "silver.customer_crm_links", "rows_written": 5}],
                         {"silver.customers": gate}) == []


def run_first_day_with(edit, engine, daily_lakes, tmp_path, request):
    """The daily flow on a fresh lake for the first day, from a copy of the sample landing changed by ``edit``."""
    from lakehouse.flows.daily import daily_lakehouse

    day = FLOW_DAYS[0]
    landing = tmp_path / "landing"
    shutil.copytree(daily_lakes("polars")["landing"], landing)
    edit(landing, day)
    kwargs = {} if engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    root = tmp_path / "lake"
    state = daily_lakehouse(run_date=date.fromisoformat(day), lake_root=str(root), landing_root=str(landing),
                            return_state=True, **kwargs)
    assert state.is_failed()
    return repr(state.result(raise_on_failure=False)), root


@pytest.mark.parametrize("engine", DELTA_ENGINES)
def test_a_failed_gate_stops_the_flow_before_gold_and_names_each_failure(engine, daily_lakes, prefect_harness,
                                                                        tmp_path, request):
    """One first day with two defects (one flow run per engine): a quarantine rate above a table's gate, and a
    silver reference that does not resolve. Both are named; gold is not built."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    def malformed_emails_and_an_unknown_account(landing, day):
        # every fourth customer of the day: far above the 5% gate
        customers = landing / "snowflake" / "customers" / day / "customers.parquet"
        frame = pl.read_parquet(customers)
        frame.with_columns(pl.when(pl.int_range(pl.len()) % 4 == 0).then(pl.lit("not-an-email"))
                           .otherwise(pl.col("email")).alias("email")).write_parquet(customers)
        # one contact of an account that does not exist
        contacts = next((landing / "crm" / "contacts" / day).glob("*.csv"))
        frame = pl.read_csv(contacts, infer_schema=False)
        first = frame.filter(pl.col("account_id").is_not_null())["contact_id"][0]
        frame.with_columns(pl.when(pl.col("contact_id") == first).then(pl.lit("A999999"))
                           .otherwise(pl.col("account_id")).alias("account_id")).write_csv(contacts)

    message, root = run_first_day_with(malformed_emails_and_an_unknown_account, engine, daily_lakes, tmp_path,
                                       request)
    assert "silver gate failed" in message and "silver.customers" in message and "email.malformed" in message
    assert "limit 5%" in message
    assert "silver.contacts ref.account_id->silver.accounts: 1 row(s) break referential integrity" in message
    assert not (root / "gold").exists(), "gold is not built after a failed gate"
    assert Releases(Lake(str(root))).current() is None
    assert (root / table("silver.customers").path).is_dir(), "silver was written: the gate judges what it holds"

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["silver-gate"])),
                                          limit=20)
    rows = [r for a in artifacts for r in (a.data if isinstance(a.data, list) else json.loads(a.data))]
    hit = [r for r in rows if r["table"] == "silver.customers" and r["rule"] == "email.malformed"
           and "not-an-email" in r["sample"]]
    assert hit, rows[:5]


def test_freshness_judges_the_newest_delivery_against_the_run_date():
    from lakehouse.tasks.transforms.audit import check_freshness

    fx = table("silver.fx_rates")
    assert fx.gate.max_age_days == 4 and fx.source == "bronze.fx.rates"
    friday = date(2026, 10, 30)
    assert check_freshness(fx, friday, date(2026, 11, 2)) is None, "a weekend without rates is not stale"
    assert check_freshness(fx, friday, date(2026, 11, 3)) is None, "4 days is the limit"
    stale = check_freshness(fx, friday, date(2026, 11, 4))
    assert stale is not None and stale.rule == "freshness.stale"
    assert "expected a delivery to bronze.fx.rates within 4 day(s) before 2026-11-04, the newest was ingested " \
           "for 2026-10-30 (5 days before)" in stale.reason
    assert check_freshness(fx, None, date(2026, 11, 5)) is None, "a table never delivered is judged by other rules"


def test_a_stale_silver_table_fails_the_gate(lake_copy, prefect_harness):
    from datetime import UTC, datetime, timedelta

    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.gates import GateFailedError, check_gate

    late = date.fromisoformat(FLOW_DAYS[-1]) + timedelta(days=10)  # ten days without any delivery
    ctx = RunContext(run_date=late, run_id="stale", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(lake_copy["root"]), **lake_copy["engine"]})
    with pytest.raises(GateFailedError, match=r"silver.fx_rates freshness.stale: expected a delivery to bronze.fx.rates"):
        check_gate.fn(ctx, "silver", [])
    on_time = ctx.model_copy(update={"run_date": date.fromisoformat(FLOW_DAYS[-1])})
    check_gate.fn(on_time, "silver", [])  # the day the lake was built: fresh, passes


@pytest.mark.parametrize("engine", DELTA_ENGINES)
def test_a_bronze_gate_stops_the_flow_before_silver(engine, daily_lakes, prefect_harness, tmp_path, request):
    def garbage_lines(landing, day):  # a broken producer: 400 lines that are not JSON in one micro-batch
        batch = min((landing / "kafka" / "order_events" / day).glob("*.jsonl"))
        batch.write_text(batch.read_text() + "".join(f"<html>502 Bad Gateway {i}</html>\n" for i in range(400)))

    message, root = run_first_day_with(garbage_lines, engine, daily_lakes, tmp_path, request)
    assert "bronze gate failed" in message and "bronze.kafka.order_events quarantined" in message
    assert "parse.malformed_json" in message
    assert (root / table("bronze.kafka.order_events").path).is_dir(), "bronze was written: the gate judges it"
    assert not (root / "silver").exists(), "silver is not built after a failed bronze gate"


@pytest.mark.parametrize("engine", DELTA_ENGINES)
def test_a_small_feed_losing_a_third_of_its_rows_stops_the_run(engine, daily_lakes, prefect_harness, tmp_path,
                                                                 request):
    """The FX feed is under the rate gate's 100-row minimum; a third of its rates broken still fails the silver
    gate (the small-batch share), naming the table and its limit."""
    def break_a_third_of_the_rates(landing, day):
        rates = landing / "fx" / "rates" / day / "rates.jsonl"
        # the latest fixing only (the first file also carries 10 days of history): one rate per currency
        lines = [x for x in rates.read_text().splitlines() if x.endswith("}")]
        latest = max(json.loads(x)["rate_date"] for x in lines)
        lines = [x for x in lines if json.loads(x)["rate_date"] == latest]
        assert len(lines) < 100, "under the rate gate's minimum"
        broken = [line.replace('"rate":"', '"rate":"-') if i % 3 == 0 else line for i, line in enumerate(lines)]
        assert sum(a != b for a, b in zip(lines, broken, strict=True)) >= len(lines) // 3 - 1
        rates.write_text("\n".join(broken) + "\n")

    message, _ = run_first_day_with(break_a_third_of_the_rates, engine, daily_lakes, tmp_path, request)
    assert "silver gate failed" in message and "silver.fx_rates quarantined" in message
    assert "(limit 25%), most by amount.out_of_range" in message
