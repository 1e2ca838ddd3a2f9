"""Quarantine you can act on: list, show, and replay after a fix, each accepted row exactly once. On both
engines, on a private copy of the two-day lake."""

from __future__ import annotations

import hashlib
import json

import narwhals as nw
import pyarrow as pa
import pytest
from lakes import assert_same_rows, normalise
from typer.testing import CliRunner

from lakehouse.backends import Lake
from lakehouse.backends.logs import replay_log
from lakehouse.backends.releases import Releases
from lakehouse.contracts.catalog import table
from lakehouse.flows.cli import app
from lakehouse.flows.quarantine import replay_quarantine
from lakehouse.tasks.replay import ReplayError, replayable
from lakehouse.tasks.transforms import gold
from lakehouse.testing import handed_over

pytestmark = pytest.mark.slow
runner = CliRunner()


def rows(engine, name: str, rule: str | None = None) -> list[dict]:
    frame = engine.scan(table(name))
    if rule:
        frame = frame.filter(nw.col("rule") == rule)
    return engine.to_arrow(frame).to_pylist()


def test_replay_accepts_each_fixed_row_exactly_once_and_keeps_the_rest(lake_copy, prefect_harness):
    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    kwargs = {"lake_root": str(root), **lake_copy["engine"]}
    orders, quarantine = table("silver.orders"), "quarantine.silver.orders"
    unknown = rows(engine, quarantine, "ref.unknown_customer")
    assert unknown, "the sample data quarantines orders of customers that do not exist"
    missing = sorted({json.loads(r["record"])["customer_id"] for r in unknown})
    quarantined_before = len(rows(engine, quarantine))
    keys_before = {(r["record_hash"], r["rule"], r["occurrence"]) for r in rows(engine, quarantine)}
    orders_before = engine.count(engine.scan(orders))
    ids_before = {r["order_id"] for r in rows(engine, "silver.orders")}

    # The fix: the missing customers arrive late (here merged straight into silver, as a late load would).
    customers = table("silver.customers")
    template = rows(engine, "silver.customers")[0]
    late = [{**template, "customer_id": c, "_record_hash": hashlib.sha256(c.encode()).hexdigest()} for c in missing]
    engine.merge(customers, engine.from_arrow(pa.Table.from_pylist(late, schema=customers.arrow_schema)))
    versions = table("silver.customer_versions")
    engine.merge(versions, engine.from_arrow(pa.Table.from_pylist(
        [{c: r[c] for c in versions.columns} for r in late], schema=versions.arrow_schema)))

    first = replay_quarantine(table_name="silver.orders", rule="ref.unknown_customer", **kwargs)
    done = first[0]
    assert done["pending"] == len({r["record_hash"] for r in unknown})
    assert done["accepted"] == done["pending"]
    # An exact second copy of a replayed record is a duplicate again (and already quarantined as one).
    assert set(done["still_quarantined"]) <= {"duplicate.exact"}
    accepted_ids = {json.loads(r["record"])["order_id"] for r in unknown}
    silver_ids = {r["order_id"] for r in rows(engine, "silver.orders")}
    assert accepted_ids <= silver_ids
    assert engine.count(engine.scan(orders)) == orders_before + len(accepted_ids - ids_before), "merged by key"
    assert len(rows(engine, quarantine)) == quarantined_before, "quarantine keeps its history; nothing added"
    spark = lake_copy["engine"]  # the listing counts on the lake's own engine (its settings name it)
    on = {"LAKEHOUSE_BACKEND": "spark", "LAKEHOUSE_SPARK__REMOTE": spark["spark_remote"]} if spark else {}
    listed = runner.invoke(app, ["quarantine", "list", "--lake-root", str(root)], env={"COLUMNS": "250", **on})
    line = next(ln for ln in listed.output.splitlines() if "ref.unknown_customer" in ln and "silver.orders" in ln)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[2] == cells[4] == f"{len(unknown):,}", line  # every row of the rule, all accepted by the replay
    # Gold was rebuilt, audited and released with them.
    release = Releases(Lake(str(root))).current()
    assert release is not None and release.release_id == first[-1]["table"]
    fact = engine.scan(table("gold.fact_orders"), version=release.versions["gold.fact_orders"])
    assert accepted_ids <= set(engine.to_arrow(fact.select("order_id")).column("order_id").to_pylist())
    # Only the fact partitions of the replayed orders' dates were rebuilt, and the fact equals one built whole.
    order_dates = {r["order_date"] for r in rows(engine, "silver.orders") if r["order_id"] in accepted_ids}
    by_table = {s["table"]: s for s in first}
    assert by_table["gold.fact_orders"]["order_dates"] == len(order_dates) > 0
    assert by_table["gold.product_performance"]["order_dates"] == len(order_dates)
    whole = gold.build_fact_orders(engine.scan(orders), engine.scan(table("silver.order_events")),
                                   engine.scan(table("gold.dim_customer")))
    assert_same_rows("gold.fact_orders", normalise(engine.to_arrow(whole), "gold.fact_orders"),
                     normalise(engine.to_arrow(fact), "gold.fact_orders"))
    logged = replay_log(Lake(str(root)), "silver.orders").table()
    assert logged is not None and set(logged.column("record_hash").to_pylist()) == {r["record_hash"] for r in unknown}

    # Exactly once: the same replay again finds nothing to do and changes nothing.
    snapshot = sorted(r["_record_hash"] for r in rows(engine, "silver.orders"))
    again = replay_quarantine(table_name="silver.orders", rule="ref.unknown_customer", **kwargs)[0]
    assert again["pending"] == 0 and again.get("accepted", 0) == 0
    assert sorted(r["_record_hash"] for r in rows(engine, "silver.orders")) == snapshot

    # Rows that still fail stay quarantined once: no product arrived for ref.unknown_product.
    products = rows(engine, quarantine, "ref.unknown_product")
    released = Releases(Lake(str(root))).current()
    still_run = replay_quarantine(table_name="silver.orders", rule="ref.unknown_product", **kwargs)
    still = still_run[0]
    assert still["accepted"] == 0 and still["still_quarantined"] == {"ref.unknown_product": len(products)}
    assert len(still_run) == 1 and Releases(Lake(str(root))).current() == released, "nothing accepted: no release"
    after = rows(engine, quarantine)
    assert len(after) == quarantined_before, "no quarantined row is written twice"
    assert {(r["record_hash"], r["rule"], r["occurrence"]) for r in after} == keys_before
    assert sorted(r["_record_hash"] for r in rows(engine, "silver.orders")) == snapshot


def test_only_silver_tables_replay_and_the_error_says_how_bronze_rejects_are_replayed():
    replayable("silver.orders")
    with pytest.raises(ReplayError, match="fixing it under the landing folder and running its date again"):
        replayable("bronze.kafka.order_events")
    result = runner.invoke(app, ["quarantine", "replay", "gold.fact_orders"])
    assert result.exit_code == 2 and "expected a silver table fed by bronze" in result.output


def test_list_and_show_print_the_quarantined_rows(lake_copy):
    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    listed = runner.invoke(app, ["quarantine", "list", "--lake-root", str(root)])
    assert listed.exit_code == 0, listed.output
    malformed = rows(engine, "quarantine.silver.customers", "email.malformed")
    assert "quarantine.silver.customers" in listed.output and "email.malformed" in listed.output
    assert f"{len(malformed):,}" in listed.output
    shown = runner.invoke(app, ["quarantine", "show", "silver.customers", "--rule", "email.malformed",
                                "--lake-root", str(root), "--limit", "500"])
    assert shown.exit_code == 0, shown.output
    assert f"first {len(malformed)} rows" in shown.output
    one = min(malformed, key=lambda r: (str(r["run_date"]), r["source_file"], r["record"]))
    assert json.loads(one["record"])["customer_id"] in shown.output
    bad = runner.invoke(app, ["quarantine", "show", "silver.nothing", "--lake-root", str(root)])
    assert bad.exit_code == 2 and "expected a silver, bronze or quarantine table name" in bad.output


def test_a_replay_rebuilds_the_order_dates_its_accepted_rows_change(pristine_lake):
    """The replayed rows stand for the run's batch of the daily plan: orders their own dates, a customer version
    the dates of the customer's orders from that version on (all of them for a first version), other tables
    none."""
    from datetime import UTC, date, datetime

    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.replay import replayed_order_dates

    ctx = RunContext(run_date=date(2026, 11, 2), run_id="replay-dates", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(pristine_lake["root"])})
    engine = ctx.engine()
    orders = rows(engine, "silver.orders")
    assert len({o["order_date"] for o in orders}) > 1
    some = [orders[0], next(o for o in orders if o["order_date"] == orders[0]["order_date"] and o is not orders[0])]
    def accepted(hashes: list[str]):
        return engine.from_arrow(pa.table({"_record_hash": pa.array(hashes, pa.string())}))

    assert replayed_order_dates(engine, "silver.orders", accepted([o["_record_hash"] for o in some])) == \
        sorted({o["order_date"] for o in some})

    versions = rows(engine, "silver.customer_versions")
    firsts: dict[str, datetime] = {}
    for v in versions:
        firsts[v["customer_id"]] = min(firsts.get(v["customer_id"], v["updated_at"]), v["updated_at"])
    buyers = {o["customer_id"] for o in orders}
    later = [v for v in versions if v["updated_at"] > firsts[v["customer_id"]] and v["customer_id"] in buyers][:2]
    first = [v for v in versions if v["updated_at"] == firsts[v["customer_id"]] and v["customer_id"] in buyers][:2]
    assert later and first
    for picked in (later, first):
        expected = set()
        for v in picked:
            since = v["updated_at"] if v["updated_at"] > firsts[v["customer_id"]] else None
            expected |= {o["order_date"] for o in orders if o["customer_id"] == v["customer_id"]
                         and (since is None or o["order_ts"] >= since)}
        assert replayed_order_dates(engine, "silver.customers", accepted([v["_record_hash"] for v in picked])) == \
            sorted(expected)
    assert replayed_order_dates(engine, "silver.products", accepted([orders[0]["_record_hash"]])) == []


def test_silver_quarantine_is_built_and_written_by_the_engine_never_collected(lakehouse_engine, request, tmp_path):
    """Thousands of rows quarantined in one batch: their JSON records are built and written by the engine, and
    nothing the engine hands the driver (``to_arrow``) holds more than a row per rule."""
    from datetime import UTC, date, datetime

    import polars as pl

    from lakehouse.backends.expressions import with_record_hash
    from lakehouse.contracts.landing import CUSTOMERS
    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.silver import conform_into_silver
    from lakehouse.testing import frame

    bad, good = 3_000, 25
    values = {c: [f"{c}-{i}" for i in range(bad + good)] for c in CUSTOMERS.column_names}
    values["customer_id"] = [f"C{i:07d}" for i in range(bad + good)]
    values["email"] = [f'no"at{i}\\sign\n' if i < bad else f"p{i}@example.com" for i in range(bad + good)]
    values["country"] = ["DE"] * (bad + good)
    values["phone"] = [None] * (bad + good)
    values["signup_date"] = ["2026-10-01"] * (bad + good)
    values["updated_at"] = ["2026-11-01T10:00:00Z"] * (bad + good)
    n = bad + good
    data = values | {"_run_id": ["r"] * n, "_ingested_at": [datetime(2026, 11, 1, 12, tzinfo=UTC)] * n,
                     "_source_file": ["snowflake/customers/2026-11-01/customers.parquet"] * n,
                     "_ingest_date": [date(2026, 11, 1)] * n}
    schema = {c: pl.String for c in CUSTOMERS.column_names} | {
        "_run_id": pl.String, "_ingested_at": pl.Datetime("us", "UTC"), "_source_file": pl.String,
        "_ingest_date": pl.Date}
    batch = with_record_hash(frame(lakehouse_engine, data, schema), CUSTOMERS.column_names)
    spark = {} if lakehouse_engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    ctx = RunContext(run_date=date(2026, 11, 1), run_id="bounded", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(tmp_path / "lake"), "landing_root": str(tmp_path), **spark})
    engine = ctx.engine()
    materialized = []
    real_materialize = engine.materialize
    engine.materialize = lambda f: materialized.append(f) or real_materialize(f)  # type: ignore[method-assign]
    with handed_over(engine) as sizes:
        done = conform_into_silver(ctx, engine, table("silver.customers"), batch, replace_quarantine=True)
    assert (done["quarantined"], done["accepted"], done["rules"]) == (bad, good, {"email.malformed": bad})
    if engine.name == "spark":  # only the rule-tagged rows are staged; the accepted and rejected rows are filters
        assert len(materialized) == 1  # of them, computed again at each use
    assert sizes and max(sizes) <= 10, sizes
    written = engine.to_arrow(engine.scan(table("quarantine.silver.customers"))).to_pylist()
    assert len(written) == bad
    first = next(r for r in written if json.loads(r["record"])["customer_id"] == "C0000000")
    assert first["record"] == json.dumps({c: values[c][0] for c in CUSTOMERS.column_names}, ensure_ascii=False,
                                         separators=(",", ":"))


def test_a_batch_whose_rows_do_not_add_up_merges_nothing(lakehouse_engine, request, tmp_path):
    """The run date's rows in (counted by bronze file, as ``refine_table`` passes them) must equal the accepted
    plus the quarantined rows; when they do not (a row lost on the way), the conform stops before its merge."""
    from datetime import UTC, date, datetime

    from lakehouse.backends.expressions import with_record_hash
    from lakehouse.contracts.landing import OPPORTUNITIES
    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.quarantine import AccountingError
    from lakehouse.tasks.silver import conform_into_silver

    day, n = date(2026, 11, 2), 3
    spark = {} if lakehouse_engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    ctx = RunContext(run_date=day, run_id="adds-up", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(tmp_path / "lake"), "landing_root": str(tmp_path), **spark})
    engine = ctx.engine()
    bronze, silver = table("bronze.crm.opportunities"), table("silver.opportunities")
    landed = {"opportunity_id": [f"OPP{i:06d}" for i in range(n)], "account_id": ["A0001"] * n,
              "opportunity_name": [f"deal {i}" for i in range(n)], "stage": ["proposal"] * n,
              "amount": ["100.50"] * n, "currency": ["USD"] * n, "close_date": ["2026-12-01"] * n,
              "owner_name": ["Ana Lima"] * n, "updated_at": ["2026-11-02T10:00:00Z"] * n, "_run_id": ["r"] * n,
              "_ingested_at": [datetime(2026, 11, 2, 12, tzinfo=UTC)] * n,
              "_source_file": ["crm/opportunities/2026-11-02/opportunities.csv"] * n, "_ingest_date": [day] * n}
    schema = pa.schema([f for f in bronze.arrow_schema if f.name != "_record_hash"])
    engine.append(bronze, with_record_hash(engine.from_arrow(pa.table(landed, schema=schema)), OPPORTUNITIES.column_names))
    with pytest.raises(AccountingError, match=r"4 bronze rows in, 3 accepted \+ 0 quarantined"):
        conform_into_silver(ctx, engine, silver, engine.scan(bronze), replace_quarantine=True, rows_in=n + 1)
    assert not engine.exists(silver)
    done = conform_into_silver(ctx, engine, silver, engine.scan(bronze), replace_quarantine=True, rows_in=n)
    assert (done["rows_in"], done["accepted"], done["rows_written"]) == (n, n, n)


def test_a_replay_of_thousands_of_rows_is_selected_conformed_and_logged_by_the_engine(lakehouse_engine, request,
                                                                                      tmp_path):
    """3,000 opportunities quarantined for a missing FX rate, replayed once the rate arrives: their bronze rows are
    selected, conformed, merged and their hashes logged by the engine; nothing any engine hands the driver
    (``to_arrow``) holds more than a few rows, and the log makes a second replay find nothing."""
    from datetime import UTC, date, datetime

    from lakehouse.backends.expressions import with_record_hash
    from lakehouse.contracts.landing import OPPORTUNITIES
    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.replay import pending, replay_table
    from lakehouse.tasks.silver import conform_into_silver

    bad, good, day = 3_000, 25, date(2026, 11, 2)
    n = bad + good
    spark = {} if lakehouse_engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    ctx = RunContext(run_date=day, run_id="replay-bounded", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(tmp_path / "lake"), "landing_root": str(tmp_path), **spark})
    engine = ctx.engine()
    bronze, silver, fx = (table(t) for t in ("bronze.crm.opportunities", "silver.opportunities", "silver.fx_rates"))
    landed = {"opportunity_id": [f"OPP{i:06d}" for i in range(n)], "account_id": ["A0001"] * n,
              "opportunity_name": [f"deal {i}" for i in range(n)], "stage": ["proposal"] * n,
              "amount": [f"{100 + i}.50" for i in range(n)], "currency": ["EUR"] * bad + ["USD"] * good,
              "close_date": ["2026-12-01"] * n, "owner_name": ["Ana Lima"] * n,
              "updated_at": ["2026-11-02T10:00:00Z"] * n, "_run_id": ["r"] * n,
              "_ingested_at": [datetime(2026, 11, 2, 12, tzinfo=UTC)] * n,
              "_source_file": ["crm/opportunities/2026-11-02/opportunities.csv"] * n, "_ingest_date": [day] * n}
    schema = pa.schema([f for f in bronze.arrow_schema if f.name != "_record_hash"])
    engine.append(bronze, with_record_hash(engine.from_arrow(pa.table(landed, schema=schema)), OPPORTUNITIES.column_names))
    first = conform_into_silver(ctx, engine, silver, engine.scan(bronze), replace_quarantine=True)
    assert (first["accepted"], first["rules"]) == (good, {"fx.no_rate": bad})
    quarantined = {r["record_hash"] for r in rows(engine, "quarantine.silver.opportunities")}
    assert len(quarantined) == bad

    # The fix: the day's EUR rate arrives.
    engine.merge(fx, engine.from_arrow(pa.table({
        "quote_currency": ["EUR"], "rate_date": [day], "rate": [0.9], "published_at": [datetime(2026, 11, 2, 16, tzinfo=UTC)],
        "_source_file": ["fx/rates/2026-11-02/rates.jsonl"], "_record_hash": [hashlib.sha256(b"EUR").hexdigest()]},
        schema=fx.arrow_schema)))
    with handed_over(engine) as sizes:  # every engine the replay makes
        done = replay_table.fn(ctx, "silver.opportunities")
    assert (done["pending"], done["accepted"], done["still_quarantined"]) == (bad, bad, {})
    assert sizes and max(sizes) <= 10, sizes
    assert engine.count(engine.scan(table("silver.opportunities"))) == n
    logged = engine.to_arrow(engine.scan_log(replay_log(Lake(str(tmp_path / "lake")), "silver.opportunities")))
    assert sorted(logged.column("record_hash").to_pylist()) == sorted(quarantined)
    assert set(logged.column("replay_id").to_pylist()) == {"replay-bounded"}
    assert engine.count(pending(engine, ctx, "silver.opportunities", None)) == 0
    again = replay_table.fn(ctx.model_copy(update={"run_id": "replay-again"}), "silver.opportunities")
    assert again["pending"] == 0 and again.get("accepted", 0) == 0
    assert engine.to_arrow(engine.scan_log(replay_log(Lake(str(tmp_path / "lake")), "silver.opportunities"))).num_rows == bad
