"""A retry or a rerun after a fix gives the clean run's tables, on both engines.

The scenario: every order of day 2 points at a customer who signed up on day 2, and the file of day 2's sign-ups
comes late (the day's other customers file is on time). The first run of day 2 stops at the silver gate (the orders are ``ref.unknown_customer``). The
customers are delivered; then the failed flow run is retried (only what the delivery changed runs again), or
the date is run again with ``lakehouse run``. Either way silver, gold and quarantine equal one clean run of day 2
with every file there, and a rerun with nothing changed changes nothing. A rerun *without* the fix fails the
gate again: the gate judges the date's batch, not only what the rerun wrote.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import narwhals as nw
import polars as pl
import pytest
from lakes import normalised
from typer.testing import CliRunner

from lakehouse.backends import Lake
from lakehouse.backends.releases import Releases
from lakehouse.backends.run_log import RunLog
from lakehouse.contracts.catalog import TABLES
from lakehouse.flows.cli import app
from lakehouse.tasks.ledger import read_ledger

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
runner = CliRunner()


@pytest.fixture(scope="module")
def prepared(daily_lakes, tmp_path_factory):
    """``prepared(engine)``: the landing with day 2's orders pointed at day 2's sign-ups (which travel in a file
    of their own), and the clean lake of day 2 with every file there; made once per engine and test run (the
    xdist workers share them: copy before writing)."""
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.testing.plugin import shared_once

    def make(engine: str) -> dict:
        built = daily_lakes(engine)

        def build(base: Path) -> dict:
            landing = base / "landing"
            shutil.copytree(built["landing"], landing)
            customers = landing / "snowflake" / "customers"
            known = set(pl.read_parquet(customers / DAY1.isoformat() / "customers.parquet")["customer_id"].to_list())
            day2 = customers / DAY2.isoformat() / "customers.parquet"
            delivered = pl.read_parquet(day2)
            new = sorted(set(delivered["customer_id"].to_list()) - known)
            assert len(new) >= 5, "the sample signs up customers on day 2"
            # The day's sign-ups travel in a second file; the first (the updates of known customers) comes on time.
            delivered.filter(pl.col("customer_id").is_in(new)).write_parquet(day2.with_name(SIGNUPS))
            delivered.filter(~pl.col("customer_id").is_in(new)).write_parquet(day2)
            orders_file = landing / "snowflake" / "orders" / DAY2.isoformat() / "orders.parquet"
            orders = pl.read_parquet(orders_file)
            pointed = pl.Series([new[i % len(new)] for i in range(orders.height)], dtype=orders.schema["customer_id"])
            orders.with_columns(pointed.alias("customer_id")).write_parquet(orders_file)
            clean = base / "clean"
            shutil.copytree(built["first_day"], clean)
            daily_lakehouse(run_date=DAY2, lake_root=str(clean), landing_root=str(landing), **built["engine"])
            return {"landing": landing, "clean": clean, "orders": orders.height}

        return {**shared_once(tmp_path_factory, f"late-customers-{engine}", build), "built": built}

    return make


SIGNUPS = "customers-signups.parquet"


@pytest.fixture(params=["polars", "sail"])
def late_customers(request, prepared, tmp_path):
    """Per engine: a copy of the prepared landing with the sign-ups file withheld, a lake after day 1 to fail
    in, and the clean lake of day 2 to compare with."""
    ready = prepared(request.param)
    built = ready["built"]
    landing = tmp_path / "landing"
    shutil.copytree(ready["landing"], landing)
    signups = landing / "snowflake" / "customers" / DAY2.isoformat() / SIGNUPS
    withheld = tmp_path / "withheld.parquet"
    shutil.move(signups, withheld)
    failing = tmp_path / "lake"
    shutil.copytree(built["first_day"], failing)
    return {"landing": landing, "clean": ready["clean"], "root": failing, "withheld": withheld,
            "delivered": signups, "orders": ready["orders"], "engine": built["engine"], "name": request.param}


def _compared(a: Path, b: Path) -> list[str]:
    """The silver, gold and quarantine tables whose rows differ between lakes ``a`` and ``b``."""
    differ = []
    for name, spec in sorted(TABLES.items()):
        if spec.layer in ("silver", "gold", "quarantine"):
            x, y = normalised(a, name), normalised(b, name)
            if (x is None) != (y is None) or (x is not None and not x.equals(y)):
                differ.append(name)
    return differ


def _conformed_versions(root: Path) -> dict[str, int | None]:
    """The versions of bronze, quarantine and the silver tables conformed from bronze (not the links and gold,
    which every run rewrites whole)."""
    lake = Lake(str(root))
    return {name: lake.version(spec) for name, spec in TABLES.items()
            if spec.layer in ("bronze", "quarantine") or (spec.layer == "silver" and spec.source)}


def _cli_run(s: dict, *extra: str):
    engine = ["--backend", "spark", "--spark-remote", s["engine"]["spark_remote"]] if s["engine"] else []
    return runner.invoke(app, ["run", "--date", DAY2.isoformat(), "--lake-root", str(s["root"]), "--landing",
                               str(s["landing"]), *engine, *extra])


def _quarantined_orders(root: Path) -> dict[str, int]:
    rows = normalised(root, "quarantine.silver.orders")
    if rows is None:
        return {}
    day = rows.filter(pl.col("run_date") == DAY2)
    return dict(day.group_by("rule").len().iter_rows())


def test_a_retried_run_after_the_late_customers_arrive_equals_the_clean_run(late_customers, monkeypatch):
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks import gates

    s = late_customers
    real = gates.create_table_artifact
    delivered = []

    def deliver_when_the_gate_fails(*args, **kwargs):
        # The operator's fix, made while the run stands failed: the customers file is delivered.
        if kwargs.get("key") == "silver-gate" and not delivered:
            shutil.copy(s["withheld"], s["delivered"])
            delivered.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(gates, "create_table_artifact", deliver_when_the_gate_fails)
    state = daily_lakehouse.with_options(retries=1, retry_delay_seconds=0)(
        run_date=DAY2, lake_root=str(s["root"]), landing_root=str(s["landing"]), return_state=True, **s["engine"])
    assert delivered, "the first attempt stopped at the silver gate"
    assert state.is_completed(), state
    rows = [r for r in read_ledger(Lake(str(s["root"]))) if r["run_date"] == DAY2]
    failed = {r["task"] for r in rows if r["status"] == "failed"}
    assert failed == {"gate-silver"}, failed
    completed: dict[str, int] = {}
    for r in rows:
        if r["status"] == "completed":
            completed[r["task"]] = completed.get(r["task"], 0) + 1
    # The retry ran what the delivery changed, and what follows; the other sources were not touched again.
    assert completed["bronze-snowflake.customers"] == completed["silver-silver.orders"] == 2
    assert completed["bronze-snowflake.orders"] == completed["silver-silver.products"] == 1
    assert completed["gate-silver"] == 1 and completed["release-gold"] == 1

    assert _quarantined_orders(s["clean"]).get("ref.unknown_customer", 0) == 0
    assert _compared(s["clean"], s["root"]) == []
    assert Releases(Lake(str(s["root"]))).current().run_date == DAY2

    before = _conformed_versions(s["root"])
    again = _cli_run(s)
    assert again.exit_code == 0, again.output
    assert _conformed_versions(s["root"]) == before, "nothing was ingested or conformed again"
    assert _compared(s["clean"], s["root"]) == [], "a rerun with nothing changed changes nothing"


def test_a_rerun_fails_the_gate_until_the_fix_then_equals_the_clean_run(late_customers):
    s = late_customers
    first = _cli_run(s)
    assert first.exit_code != 0 and "silver gate failed" in first.output, first.output
    stuck = _quarantined_orders(s["root"])
    assert stuck.get("ref.unknown_customer", 0) > 0.9 * s["orders"], stuck
    # Run again without the fix: the gate judges the date's batch (all of it still quarantined), not the
    # nothing this rerun conformed, so nothing is released.
    unfixed = _cli_run(s)
    assert unfixed.exit_code != 0 and "silver gate failed" in unfixed.output, unfixed.output
    assert Releases(Lake(str(s["root"]))).current().run_date == DAY1
    assert _quarantined_orders(s["root"]) == stuck, "no duplicate quarantine rows"

    shutil.copy(s["withheld"], s["delivered"])
    fixed = _cli_run(s)
    assert fixed.exit_code == 0, fixed.output
    assert _compared(s["clean"], s["root"]) == []
    assert Releases(Lake(str(s["root"]))).current().run_date == DAY2


@pytest.fixture(params=["polars", "sail"])
def day_two(request, daily_lakes, tmp_path):
    """Per engine: ``clean``, the lake as day 1's run left it (for a clean run of day 2 with the changed rules),
    and ``rerun``, the lake as the daily flow's runs of day 1 and day 2 left it (the shared ``pristine`` lake, run
    once per test session from the same landing), for a rerun of day 2."""
    built = daily_lakes(request.param)
    lakes = {"clean": tmp_path / "clean", "rerun": tmp_path / "rerun"}
    shutil.copytree(built["first_day"], lakes["clean"])
    shutil.copytree(built["pristine"], lakes["rerun"])
    assert DAY2 in RunLog(Lake(str(lakes["rerun"]))).done_dates(), "day 2 was run on the rerun's lake"
    return {**built, **lakes}


def test_a_rerun_after_a_rule_change_equals_a_clean_run_with_the_changed_rule(day_two, monkeypatch):
    """Day 2 is run; then a rule is changed in the code (here: orders' exact duplicates are no longer
    quarantined, the merge keeps one copy). A rerun of the date conforms its batch again: its quarantine holds
    only what the changed rules reject, as in a clean run of day 2 with them, and the other tables agree too."""
    from lakehouse.contracts.rules import ROW_RULES
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks import silver as silver_tasks

    s = day_two
    run = {"run_date": DAY2, "landing_root": str(s["landing"]), **s["engine"]}
    assert _quarantined_orders(s["rerun"]).get("duplicate.exact", 0) > 0, "the sample's duplicates"

    changed = tuple(r for r in ROW_RULES["silver.orders"] if r.id != "duplicate.exact")
    monkeypatch.setitem(ROW_RULES, "silver.orders", changed)
    monkeypatch.setattr(silver_tasks, "conform_code_version", lambda: "the rules' code, changed")
    daily_lakehouse(lake_root=str(s["clean"]), **run)
    daily_lakehouse(lake_root=str(s["rerun"]), **run)
    assert _quarantined_orders(s["rerun"]).get("duplicate.exact", 0) == 0
    assert _quarantined_orders(s["rerun"]) == _quarantined_orders(s["clean"]) != {}
    assert _compared(s["clean"], s["rerun"]) == []


def test_a_rerun_after_a_stricter_rule_takes_out_what_it_rejects_as_a_clean_run_would(day_two, monkeypatch):
    """Day 2 is run; then rules are tightened in the code: a deny list of customers (one updated on day 2, one
    new on day 2) and of orders (updated and new ones of day 2). A rerun of the date takes out of silver what
    day 2 brought in and the rules now reject: the updated customer and orders get their day-1 versions back,
    the new ones are gone, and so are the customers' day-2 versions in ``customer_versions``; every silver,
    gold and quarantine table equals a clean run of day 2 with the stricter rules."""
    import polars as pl

    from lakehouse.contracts.rules import ROW_RULES, Rule
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks import silver as silver_tasks

    s = day_two
    run = {"run_date": DAY2, "landing_root": str(s["landing"]), **s["engine"]}

    def of_day_two(name: str, key: str) -> tuple[list[str], list[str]]:
        """Keys of ``name`` that day 2 updated and that day 2 brought in new (sorted)."""
        now, before = normalised(s["rerun"], name), normalised(s["first_day"], name)
        day2 = now.filter(pl.col("_source_file").str.contains(str(DAY2)))
        updated = day2.join(before.select(key), on=key, how="semi").get_column(key).sort().to_list()
        new = day2.join(before.select(key), on=key, how="anti").get_column(key).sort().to_list()
        return updated, new

    customers_updated, customers_new = of_day_two("silver.customers", "customer_id")
    orders_updated, orders_new = of_day_two("silver.orders", "order_id")
    assert customers_updated and customers_new and orders_updated and orders_new
    denied_customers = [customers_updated[0], customers_new[0]]
    denied_orders = orders_updated[:5] + orders_new[:5]
    monkeypatch.setitem(ROW_RULES, "silver.customers", (*ROW_RULES["silver.customers"], Rule(
        "customer.denied", "expected a customer not on the deny list",
        lambda: ~nw.col("customer_id").is_in(denied_customers))))
    monkeypatch.setitem(ROW_RULES, "silver.orders", (*ROW_RULES["silver.orders"], Rule(
        "order.denied", "expected an order not on the deny list", lambda: ~nw.col("order_id").is_in(denied_orders))))
    monkeypatch.setattr(silver_tasks, "conform_code_version", lambda: "the rules' code, stricter")
    daily_lakehouse(lake_root=str(s["clean"]), **run)
    daily_lakehouse(lake_root=str(s["rerun"]), **run)

    assert _quarantined_orders(s["rerun"]).get("order.denied", 0) >= len(denied_orders)
    for name, key, denied in (("silver.customers", "customer_id", denied_customers),
                              ("silver.orders", "order_id", denied_orders)):
        after = normalised(s["rerun"], name).filter(pl.col(key).is_in(denied))
        back = normalised(s["first_day"], name).filter(pl.col(key).is_in(denied))
        assert back.height == len(denied) // 2, f"{name}: the updated keys had a day-1 version"
        assert after.equals(back), f"{name}: the denied keys are as day 1 left them"
    versions = normalised(s["rerun"], "silver.customer_versions").filter(pl.col("customer_id").is_in(denied_customers))
    assert not versions.get_column("_source_file").str.contains(str(DAY2)).any()
    assert _compared(s["clean"], s["rerun"]) == []


def test_the_rules_code_version_changes_with_the_code_that_decides_the_rules(tmp_path, monkeypatch):
    from lakehouse.tasks import caching

    rule_file = tmp_path / "rules.py"
    rule_file.write_text("LIMIT = 1\n")
    monkeypatch.setattr(caching, "CONFORM_CODE", (*caching.CONFORM_CODE, str(rule_file)))
    caching.conform_code_version.cache_clear()
    before = caching.conform_code_version()
    rule_file.write_text("LIMIT = 2\n")
    caching.conform_code_version.cache_clear()
    assert caching.conform_code_version() != before
    caching.conform_code_version.cache_clear()
