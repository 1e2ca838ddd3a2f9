"""The daily flow end to end under a Prefect test server: two days, checked against an independent
computation from the landing files, then re-run to prove reruns change nothing."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from lakehouse.contracts.catalog import TABLES
from lakehouse.contracts.landing import CURRENCY_CODES, LANDING_ENTITIES
from lakehouse.flows.daily import daily_lakehouse

pytestmark = pytest.mark.slow

DAY1 = date(2026, 11, 1)
DAYS = [DAY1, DAY1 + timedelta(days=1)]
EMAIL = re.compile(r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module", params=["polars", "sail"])
def lake(request, daily_lakes):
    """The two-day lake built by the daily flow on the laptop engine, and on Spark (Sail)."""
    return daily_lakes(request.param)


def read_table(root: Path, name: str) -> list[dict]:
    path = root / TABLES[name].path
    if not (path / "_delta_log").is_dir():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def snapshot(root: Path) -> dict[str, str]:
    """A content hash of every table (rows sorted), independent of file layout and Delta version."""
    out = {}
    for name in TABLES:
        rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in read_table(root, name))
        out[name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


# ------------------------------------------------------------------------- independent reference
def landing_rows(landing: Path, source: str, entity: str, day: date) -> list[dict]:
    folder = landing / source / entity / day.isoformat()
    rows: list[dict] = []
    for f in sorted(folder.glob("*")):
        if f.suffix == ".csv":
            with f.open(newline="") as fh:
                rows += list(csv.DictReader(fh))
        elif f.suffix == ".parquet":  # typed columns as the landing format's text (UTC timestamps with Z)
            rows += [{k: _text(v) for k, v in r.items()} for r in pq.read_table(f).to_pylist()]
        elif f.suffix == ".jsonl":
            for line in f.read_text().splitlines():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    rows.append({k: None if v is None else str(v) for k, v in obj.items()})
    return rows


def _text(v):
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, date):
        return v.isoformat()
    return None if v is None else str(v)


def clean(v):
    v = None if v is None else str(v).strip()
    return v or None


def num(v, kind=float):
    try:
        return kind(clean(v))
    except (TypeError, ValueError):
        return None


def expected_orders(landing: Path, days: list[date]) -> dict[str, dict]:
    """Orders as gold.fact_orders should hold them, computed in plain Python from the landing files."""
    customers: set[str] = set()
    products: set[str] = set()
    rates: dict[tuple[str, date], float] = {}
    orders: dict[str, tuple] = {}
    events: dict[str, tuple] = {}
    for day in days:
        for r in landing_rows(landing, "fx", "rates", day):
            ccy, rate = clean(r.get("quote_currency")), num(r.get("rate"))
            if ccy in CURRENCY_CODES and rate and rate > 0 and clean(r.get("base_currency")) == "USD":
                rates[(ccy, date.fromisoformat(clean(r["rate_date"])))] = rate
        for r in landing_rows(landing, "snowflake", "customers", day):
            email = (clean(r.get("email")) or "").lower()
            country = clean(r.get("country"))
            if (clean(r.get("customer_id")) and EMAIL.match(email) and clean(r.get("signup_date"))
                    and TS.match(clean(r.get("updated_at")) or "")
                    and (country is None or re.match(r"^[A-Z]{2}$", country.upper()))):
                customers.add(clean(r["customer_id"]))
        for r in landing_rows(landing, "snowflake", "products", day):
            if clean(r.get("product_id")) and (num(r.get("list_price_usd")) or -1) >= 0:
                products.add(clean(r["product_id"]))
        for r in landing_rows(landing, "kafka", "order_events", day):
            if clean(r.get("order_id")) and clean(r.get("event_id")):
                key = (clean(r["event_ts"]), clean(r["event_id"]))
                if r["order_id"] not in events or key > events[r["order_id"]][0]:
                    events[clean(r["order_id"])] = (key, clean(r["status"]))
        for r in landing_rows(landing, "snowflake", "orders", day):
            qty, price, ccy = num(r.get("quantity"), int), num(r.get("unit_price")), (clean(r.get("currency")) or "").upper()
            ts = clean(r.get("order_ts"))
            if not (clean(r.get("order_id")) and qty and price and ts and TS.match(ts)):
                continue
            if not (1 <= qty <= 1000 and price > 0 and ccy in CURRENCY_CODES):
                continue
            if clean(r.get("customer_id")) not in customers or clean(r.get("product_id")) not in products:
                continue
            order_date = date.fromisoformat(ts[:10])
            rate = 1.0 if ccy == "USD" else next(
                (rates[(ccy, order_date - timedelta(days=k))] for k in range(5)
                 if (ccy, order_date - timedelta(days=k)) in rates), None)
            if rate is None or price / rate > 100_000:  # the price bound is in USD
                continue
            version = clean(r["updated_at"])
            if r["order_id"] in orders and orders[r["order_id"]][0] >= version:
                continue
            orders[r["order_id"]] = (version, clean(r["status"]), qty * price / rate)
    result = {}
    for oid, (version, status, usd) in orders.items():
        if oid in events and events[oid][0][0] > version:
            status = events[oid][1]
        result[oid] = {"status": status, "amount_usd": usd}
    return result


# ------------------------------------------------------------------------------------------ tests
def test_gold_matches_an_independent_computation_from_landing(lake):
    expected = expected_orders(lake["landing"], DAYS)
    fact = {r["order_id"]: r for r in read_table(lake["root"], "gold.fact_orders")}
    assert set(fact) == set(expected)
    assert {k: v["status"] for k, v in fact.items()} == {k: v["status"] for k, v in expected.items()}
    kept = [v["amount_usd"] for v in expected.values() if v["status"] != "cancelled"]
    fact_kept = sum(r["amount_usd"] for r in fact.values() if not r["is_cancelled"])
    assert fact_kept == pytest.approx(sum(kept), abs=0.01 * len(kept))
    c360 = read_table(lake["root"], "gold.customer_360")
    # marts round each customer's / product-day's money to cents
    assert sum(r["lifetime_revenue_usd"] for r in c360) == pytest.approx(fact_kept, abs=0.005 * len(c360))
    assert sum(r["order_count"] for r in c360) == len(kept)
    perf = read_table(lake["root"], "gold.product_performance")
    assert sum(r["revenue_usd"] for r in perf) == pytest.approx(fact_kept, abs=0.005 * len(perf))
    assert sum(r["orders"] for r in perf) == len(fact)
    dates = sorted(r["date"] for r in read_table(lake["root"], "gold.dim_date"))
    order_dates = sorted({r["order_date"] for r in fact.values()})
    assert dates[0] == order_dates[0] and dates[-1] == order_dates[-1] and len(dates) == len(set(dates))


def test_every_stage_accounts_for_every_row(lake):
    for day, summaries in lake["summaries"].items():
        for s in summaries:
            if "rows_in" in s:
                assert s["rows_in"] == s["accepted"] + s["quarantined"], (day, s)
        # bronze: every data line of the day's landing files is in bronze or bronze quarantine
        by_table = {s["table"]: s for s in summaries}
        refused = {f for s in summaries for f in s.get("refused", [])}
        for entity in LANDING_ENTITIES:
            folder = lake["landing"] / entity.source / entity.entity / day.isoformat()
            lines = 0
            for f in folder.glob("*"):
                if f.relative_to(lake["landing"]).as_posix() in refused:
                    continue  # refused whole for its schema: none of it is an input row
                if f.suffix == ".parquet":
                    lines += pq.read_metadata(f).num_rows
                else:
                    text = [ln for ln in f.read_text().splitlines() if ln.strip()]
                    lines += len(text) - (1 if f.suffix == ".csv" and text else 0)
            assert by_table[f"bronze.{entity.source}.{entity.entity}"]["rows_in"] == lines, entity.name


def test_quarantine_holds_the_injected_dirt_with_rule_reason_record_and_run_id(lake):
    rules: dict[str, int] = {}
    for name, spec in TABLES.items():
        if spec.layer != "quarantine":
            continue
        for r in read_table(lake["root"], name):
            assert r["reason"] and r["run_id"] and r["record"]
            rules[r["rule"]] = rules.get(r["rule"], 0) + 1
    for rule in ("duplicate.exact", "email.malformed", "amount.out_of_range", "currency.unknown",
                 "ref.unknown_customer", "ref.unknown_product", "parse.malformed_json"):
        assert rules.get(rule, 0) > 0, rule


def test_a_file_with_a_renamed_column_is_refused_whole_and_kept_for_replay(lake):
    from lakehouse.backends import Lake
    from lakehouse.backends.logs import refused_log

    refused = {f for summaries in lake["summaries"].values() for s in summaries for f in s.get("refused", [])}
    label = "redshift/customer_behaviour/" + DAYS[1].isoformat() + "/customer_behaviour.csv"
    assert refused == {label}, "the sample's one renamed-column file, and nothing else"
    log = refused_log(Lake(str(lake["root"])), "redshift", "customer_behaviour").table()
    assert log is not None
    entry = next(r for r in log.to_pylist() if r["source_file"] == label)
    assert entry["problem"] == "schema.missing_column" and "['page_views']" in entry["reason"]
    assert label not in {r["_source_file"] for r in read_table(lake["root"], "bronze.redshift.customer_behaviour")}
    assert not [r for r in read_table(lake["root"], "quarantine.bronze.redshift.customer_behaviour")
                if r["source_file"] == label], "refused, not quarantined record by record"


def test_bronze_never_ingests_a_file_twice_and_reruns_change_nothing(lake):
    before = snapshot(lake["root"])
    bronze_files = {r["_source_file"] for r in read_table(lake["root"], "bronze.snowflake.orders")}
    assert bronze_files == {f"snowflake/orders/{d}/orders.parquet" for d in DAYS}
    for day in (DAYS[1], DAYS[0]):  # the latest day again, then an earlier one
        daily_lakehouse(run_date=day, lake_root=str(lake["root"]), landing_root=str(lake["landing"]), **lake["engine"])
        assert snapshot(lake["root"]) == before


def test_a_run_date_with_no_landing_folder_fails_with_a_clear_error(prefect_harness, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a landing folder"):
        daily_lakehouse(run_date=DAY1, lake_root=str(tmp_path / "lake"), landing_root=str(tmp_path / "nowhere"))


def test_summary_artifact_is_written(lake):
    """Each day's flow run created its summary artifact (read back from the Prefect server by the kit)."""
    for day in DAYS:
        data = lake["artifacts"][day]["daily-lakehouse-summary"]
        rows = data if isinstance(data, list) else json.loads(data)
        assert {r["table"] for r in rows} >= {"gold.fact_orders", "silver.orders", "bronze.snowflake.orders"}
        assert {r["table"] for r in rows} == {s["table"] for s in lake["summaries"][day]}


def test_a_refused_file_is_ingested_once_fixed_and_its_date_run_again(lake_copy, tmp_path):
    import shutil

    import polars as pl
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    landing = tmp_path / "fixed-landing"
    shutil.copytree(lake_copy["landing"], landing)
    label = "redshift/customer_behaviour/" + DAYS[1].isoformat() + "/customer_behaviour.csv"
    broken = pl.read_csv(landing / label, infer_schema=False)
    renamed = [c for c in broken.columns if c not in {"page_views"} and c.replace("_", "") == "pageviews"]
    assert renamed, broken.columns
    broken.rename({renamed[0]: "page_views"}).write_csv(landing / label)  # the fix
    root = lake_copy["root"]
    summaries = daily_lakehouse(run_date=DAYS[1], lake_root=str(root), landing_root=str(landing), **lake_copy["engine"])
    ingest = next(s for s in summaries if s["table"] == "bronze.redshift.customer_behaviour")
    assert ingest["refused"] == [] and ingest["new_files"] == 1 and ingest["accepted"] == broken.height
    assert label in {r["_source_file"] for r in read_table(root, "bronze.redshift.customer_behaviour")}
    listed = CliRunner().invoke(app, ["quarantine", "list", "--lake-root", str(root)])
    assert listed.exit_code == 0, listed.output
    refused_part = listed.output.split("landing files refused")[1]
    assert "schema.missing_column" in refused_part and "yes" in refused_part, "refused once, ingested since"


def test_a_day_appended_to_the_landing_runs_clean_and_loses_no_row(lake_copy, tmp_path):
    """``generate --append`` delivers tomorrow: its run refuses nothing, every order of its file is in silver or
    quarantined, the late updates of earlier orders win, and the day is released."""
    import shutil

    import polars as pl

    from lakehouse.backends import Lake
    from lakehouse.backends.releases import Releases
    from lakehouse.backends.sources.sample import append, read_span

    landing = tmp_path / "landing"
    shutil.copytree(lake_copy["landing"], landing)
    day = read_span(landing).next_day
    assert day == DAYS[-1] + timedelta(days=1)
    report = append(landing)
    root = lake_copy["root"]
    summaries = daily_lakehouse(run_date=day, lake_root=str(root), landing_root=str(landing), **lake_copy["engine"])
    assert [s["table"] for s in summaries if s.get("refused")] == []
    ingested = {s["table"]: s for s in summaries if s["table"].startswith("bronze.")}
    assert ingested["bronze.snowflake.orders"]["rows_in"] == report.entities["snowflake.orders"].rows
    delivered = pl.read_parquet(landing / "snowflake/orders" / day.isoformat() / "orders.parquet")
    silver = {r["order_id"]: r for r in read_table(root, "silver.orders")}
    quarantined = {json.loads(r["record"])["order_id"] for r in read_table(root, "quarantine.silver.orders")
                   if r["run_date"] == day}
    ids = set(delivered.get_column("order_id"))
    assert ids <= set(silver) | quarantined and ids - quarantined
    resent = delivered.filter(pl.col("order_ts").dt.date() < day).unique("order_id")
    assert resent.height == report.entities["snowflake.orders"].late_updates > 0
    for order_id, status in resent.select("order_id", "status").iter_rows():
        if order_id not in quarantined:
            assert silver[order_id]["status"] == status, order_id
    fact_days = {r["order_date"] for r in read_table(root, "gold.fact_orders")}
    assert day in fact_days
    assert Releases(Lake(str(root))).current().run_date == day


def test_the_incidents_artifact_lists_every_rule_in_full(lake):
    """The Markdown artifact names every quarantined rule of the run with its count (the table artifact's
    cells are cut short in the UI)."""
    summaries = lake["summaries"][DAYS[-1]]
    expected = {(s["table"], r, n) for s in summaries for r, n in (s.get("rules") or {}).items() if n}
    assert expected
    text = lake["artifacts"][DAYS[-1]]["daily-lakehouse-incidents"]
    assert all(f"| {t} | {r} | {n:,} |" in text for t, r, n in expected)
