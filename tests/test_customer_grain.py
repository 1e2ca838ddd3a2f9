"""``gold.dim_customer`` built on from its recorded build (tasks/customer_grain.py): only the customers whose
versions or CRM link changed are built again, every other row is kept, and the table equals a whole build on both
engines; without a build it can trust, the table is built whole."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pyarrow as pa

from lakehouse.contracts.catalog import table
from lakehouse.tasks import customer_grain
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.gold import build_gold, dim_customer_of
from tests.conftest import FLOW_DAYS
from tests.lakes import assert_same_rows, clean_up_log, normalise

DIM = "gold.dim_customer"


def _ctx(lake_copy, run_id: str) -> RunContext:
    return RunContext(run_date=date.fromisoformat(FLOW_DAYS[-1]), run_id=run_id, started_at=datetime.now(UTC),
                      overrides={"lake_root": str(lake_copy["root"]), "landing_root": str(lake_copy["landing"]),
                                 **lake_copy["engine"]})


def _rows(engine, name: str) -> list[dict]:
    return engine.to_arrow(engine.scan(table(name))).to_pylist()


def _replace(engine, name: str, rows: list[dict]) -> None:
    spec = table(name)
    engine.overwrite(spec, engine.from_arrow(pa.Table.from_pylist(rows, schema=spec.arrow_schema)))


def _whole(engine) -> pl.DataFrame:
    """What a whole build of dim_customer gives from the lake's inputs now."""
    return normalise(engine.to_arrow(dim_customer_of(lambda n: engine.scan(table(n)))), DIM)


def test_changed_keys_are_the_rows_gone_new_or_different_with_nulls_compared_as_values(lake_copy):
    engine = lake_copy["engine_impl"]
    spec = table("silver.customer_crm_links")
    links = sorted(_rows(engine, spec.name), key=lambda r: r["customer_id"])
    assert len(links) >= 4 and any(r["account_id"] is None for r in links), "some customers have no CRM account"
    since = engine.version(spec)
    unchanged_null = next(r for r in links if r["account_id"] is None)
    moved, gone = [r for r in links if r["account_id"] is not None][:2]
    new = {**moved, "customer_id": "C-NEW-LINK"}
    rows = [r for r in links if r is not gone and r is not moved] + [{**moved, "account_id": "A-ELSEWHERE"}, new]
    _replace(engine, spec.name, rows)

    changed = customer_grain.changed_keys(engine, spec.name, since, "customer_id")
    keys = set(engine.to_arrow(changed).column("customer_id").to_pylist())
    assert keys == {moved["customer_id"], gone["customer_id"], "C-NEW-LINK"}
    assert unchanged_null["customer_id"] not in keys, "a row with a null is unchanged when its values are"
    # Nothing written since: nothing changed.
    assert engine.count(customer_grain.changed_keys(engine, spec.name, engine.version(spec), "customer_id")) == 0


def test_only_the_customers_whose_inputs_changed_are_built_again_and_the_table_equals_a_whole_build(lake_copy):
    """A customer moved to another CRM account, a new version of another customer, a third customer's versions
    gone: those three get new rows (or none); every other customer keeps its rows."""
    engine = lake_copy["engine_impl"]
    ctx = _ctx(lake_copy, "customer-grain")
    links = sorted(_rows(engine, "silver.customer_crm_links"), key=lambda r: r["customer_id"])
    mover = next(r for r in links if r["account_id"] is not None)
    elsewhere = next(r["account_id"] for r in links if r["account_id"] not in (None, mover["account_id"]))
    versions = _rows(engine, "silver.customer_versions")
    customers = sorted({v["customer_id"] for v in versions} - {mover["customer_id"]})
    versioned, dropped = customers[0], customers[1]
    before = normalise(engine.to_arrow(engine.scan(table(DIM))), DIM)
    version_before = engine.version(table(DIM))

    _replace(engine, "silver.customer_crm_links", [
        {**r, "account_id": elsewhere} if r["customer_id"] == mover["customer_id"] else r for r in links])
    latest = max((v for v in versions if v["customer_id"] == versioned), key=lambda v: v["updated_at"])
    newer = {**latest, "country": "IS", "updated_at": latest["updated_at"] + timedelta(hours=1),
             "_record_hash": "f" * 64}
    _replace(engine, "silver.customer_versions", [v for v in versions if v["customer_id"] != dropped] + [newer])

    out = build_gold.fn(ctx, DIM, [])

    assert out["customers_rebuilt"] == 3
    assert out["version"] == version_before + 1
    after = normalise(engine.to_arrow(engine.scan(table(DIM))), DIM)
    assert_same_rows(DIM, after, _whole(engine))
    dim = _rows(engine, DIM)
    assert {r["crm_account_id"] for r in dim if r["customer_id"] == mover["customer_id"]} == {elsewhere}
    mine = sorted((r for r in dim if r["customer_id"] == versioned), key=lambda r: r["valid_from"])
    assert mine[-1]["country"] == "IS" and [r["is_current"] for r in mine] == [False] * (len(mine) - 1) + [True]
    assert mine[-2]["valid_to"] == mine[-1]["valid_from"], "the previous version now ends where the new one starts"
    assert dropped not in {r["customer_id"] for r in dim}
    untouched = pl.col("customer_id").is_in([mover["customer_id"], versioned, dropped]).not_()
    assert after.filter(untouched).equals(before.filter(untouched)), "every other customer's rows are as they were"

    # Built again with nothing changed since: no customer, no new table version.
    again = build_gold.fn(ctx, DIM, [])
    assert (again["customers_rebuilt"], again["version"]) == (0, out["version"])


def test_without_a_build_it_can_trust_the_table_is_built_whole(lake_copy, monkeypatch):
    """A record of another table version (a write after the recorded build), of other builders' code, or none
    at all: built whole, and the table still equals a whole build."""
    engine = lake_copy["engine_impl"]
    ctx = _ctx(lake_copy, "whole")
    lake = ctx.lake()
    spec = table(DIM)
    inputs = {n: engine.version(table(n)) for n in ("silver.customer_versions", "silver.customer_crm_links")}
    trusted, _ = customer_grain.recorded_inputs(lake, spec, engine.version(spec), inputs)
    assert trusted is not None, "the daily flow recorded its build"

    # Something else wrote the table after the recorded build (a row dropped).
    rows = _rows(engine, spec.name)
    _replace(engine, spec.name, rows[1:])
    since, why = customer_grain.recorded_inputs(lake, spec, engine.version(spec), inputs)
    assert since is None and "the table is at" in why
    summary = build_gold.fn(ctx, spec.name, [])
    assert summary["customers_rebuilt"] is None, "built whole"
    assert_same_rows(DIM, normalise(engine.to_arrow(engine.scan(spec)), DIM), _whole(engine))

    # Now recorded again; a record by other code is not continued.
    assert customer_grain.recorded_inputs(lake, spec, engine.version(spec), inputs)[0] is not None
    log = customer_grain.builds_log(lake, spec).table()
    assert log is not None and inputs in [json.loads(x) for x in log.column("inputs").to_pylist()]
    monkeypatch.setattr(customer_grain, "code_version", lambda: "other-code")
    since, why = customer_grain.recorded_inputs(lake, spec, engine.version(spec), inputs)
    assert since is None and "another version of the gold builders" in why
    monkeypatch.undo()

    # An input older than recorded (recreated) is not built on either.
    older = {**inputs, "silver.customer_versions": inputs["silver.customer_versions"] - 1}
    customer_grain.record(lake, spec, engine.version(spec), inputs, "t")
    since, why = customer_grain.recorded_inputs(lake, spec, engine.version(spec), older)
    assert since is None and "silver.customer_versions" in why


def test_a_recorded_input_version_whose_log_was_cleaned_up_is_not_built_on(lake_copy, tmp_path):
    """delta-rs drops the commits before a checkpoint once they are older than the log retention (a lake idle
    for a month): the recorded build's input version cannot be read, so the table is built whole."""
    engine = lake_copy["engine_impl"]
    links = table("silver.customer_crm_links")
    _replace(engine, links.name, _rows(engine, links.name)[1:])  # a link gone: the input moved on
    clean_up_log(lake_copy["root"] / links.path)
    # Loaded afresh under another path, as the next run's process would (this one keeps what it loaded, by path).
    cleaned = tmp_path / "cleaned"
    shutil.copytree(lake_copy["root"], cleaned)
    ctx = RunContext(run_date=date.fromisoformat(FLOW_DAYS[-1]), run_id="cleaned", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(cleaned), "landing_root": str(lake_copy["landing"]),
                                **lake_copy["engine"]})
    lake, fresh = ctx.lake(), ctx.engine()
    spec = table(DIM)
    inputs = {n: fresh.version(table(n)) for n in ("silver.customer_versions", "silver.customer_crm_links")}
    since, why = customer_grain.recorded_inputs(lake, spec, fresh.version(spec), inputs)
    assert since is None and "silver.customer_crm_links's recorded version" in why and "cleaned up" in why
    summary = build_gold.fn(ctx, DIM, [])
    assert summary["customers_rebuilt"] is None, "built whole"
    assert_same_rows(DIM, normalise(fresh.to_arrow(fresh.scan(spec)), DIM), _whole(fresh))
