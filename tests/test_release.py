"""The gold release: gold tables are written, audited (referential integrity as declared in the catalog), then
released all at once in ``_releases/gold``. Readers read released versions only, so a run whose audit
failed is never seen. On every engine."""

from __future__ import annotations

from datetime import UTC, date, datetime

import narwhals as nw
import polars as pl
import pyarrow as pa
import pytest
from conftest import FLOW_DAYS
from typer.testing import CliRunner

from lakehouse.backends import Lake, get_backend
from lakehouse.backends.releases import NotReleasedError, Releases
from lakehouse.contracts.catalog import Reference, table, tables
from lakehouse.flows.cli import app
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.transforms.audit import check_references, orphans
from lakehouse.testing import to_engine

runner = CliRunner()


def test_orphans_are_rows_whose_key_the_parent_lacks(transform_engine):
    child = to_engine(transform_engine, pl.DataFrame({"id": ["o1", "o2", "o3", "o4"], "customer_id": ["c1", "c9", None, "c2"]}))
    parent = to_engine(transform_engine, pl.DataFrame({"customer_id": ["c1", "c2", "c2"], "name": ["a", "b", "b"]}))
    ref = Reference(("customer_id",), "parent", ("customer_id",))
    got = orphans(child, parent, ref).sort("id").collect().to_native()
    rows = got.to_pandas().to_dict("records") if hasattr(got, "to_pandas") else got.to_dicts()
    assert [r["id"] for r in rows] == ["o2"], "a null key is not an orphan; a duplicated parent key is one key"


def test_check_references_counts_and_samples_each_declared_rule(transform_engine):
    fact = table("gold.fact_orders")
    assert {r.table for r in fact.references} == {"gold.dim_customer", "gold.dim_product", "gold.dim_date"}
    frames = {
        "gold.fact_orders": pl.DataFrame([pl.Series(c, [None] * 3, dtype=t) for c, t in fact.polars_schema.items()]
                                         ).with_columns(
            order_id=pl.Series(["o1", "o2", "o3"]), customer_id=pl.Series(["c1", "cX", "cY"]),
            customer_sk=pl.Series(["k1", "kX", None]),
            product_id=pl.Series(["p1", "p1", "p1"]), date_key=pl.Series([20261101, 20261101, 20261199])),
        "gold.dim_customer": pl.DataFrame({"customer_id": ["c1"], "customer_sk": ["k1"]}),
        "gold.dim_product": pl.DataFrame({"product_id": ["p1"]}),
        "gold.dim_date": pl.DataFrame({"date_key": [20261101]}),
    }

    def collect(frame):
        native = frame.collect().to_native()
        return native.to_pandas().to_dict("records") if hasattr(native, "to_pandas") else native.to_dicts()

    failures = check_references(fact, lambda name: to_engine(transform_engine, frames[name]), collect)
    by_rule = {f.rule: f for f in failures}
    assert set(by_rule) == {"ref.customer_id->gold.dim_customer", "ref.customer_sk->gold.dim_customer",
                            "ref.date_key->gold.dim_date"}
    assert by_rule["ref.customer_sk->gold.dim_customer"].failing_rows == 1, "a null surrogate key is not an orphan"
    assert by_rule["ref.customer_id->gold.dim_customer"].failing_rows == 2
    assert [r["order_id"] for r in by_rule["ref.customer_id->gold.dim_customer"].sample] == ["o2", "o3"]
    assert by_rule["ref.date_key->gold.dim_date"].failing_rows == 1
    assert "expected every customer_id of gold.fact_orders to exist as customer_id in gold.dim_customer" in \
        by_rule["ref.customer_id->gold.dim_customer"].reason


@pytest.mark.slow
def test_each_run_releases_every_gold_table_at_the_version_it_wrote(lake_copy):
    releases = Releases(Lake(str(lake_copy["root"])))
    history = releases.history()
    assert [r.seq for r in history] == list(range(1, len(history) + 1)) and len(history) >= len(FLOW_DAYS)
    for day, summaries in lake_copy["summaries"].items():
        wrote = {s["table"]: s["version"] for s in summaries if s["stage"] == "gold"}
        released = next(s for s in summaries if s["stage"] == "release")
        release = next(r for r in history if r.release_id == released["table"])
        assert release.versions == wrote and set(wrote) == {t.name for t in tables("gold")}
        assert release.run_date == day
    current = releases.current()
    assert current is not None
    for name, version in current.versions.items():
        assert lake_copy["engine_impl"].version(table(name)) == version, "the last run released what it wrote"


@pytest.mark.slow
def test_a_failed_audit_leaves_the_previous_release_current_and_readers_on_it(lake_copy, prefect_harness):
    from lakehouse.flows.daily import publish

    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    lake = Lake(str(root))
    releases = Releases(lake)
    before = releases.current()
    assert before is not None
    fact, dim = table("gold.fact_orders"), table("gold.dim_customer")
    released_dim = engine.to_arrow(engine.scan(dim, version=before.versions[dim.name])).to_pylist()
    # Break referential integrity: a customer with orders disappears from silver (latest and every version).
    victim = engine.to_arrow(engine.scan(fact).select("customer_id").head(1)).column("customer_id")[0].as_py()
    for name in ("silver.customers", "silver.customer_versions"):
        customers = engine.to_arrow(engine.scan(table(name)))
        kept = customers.filter(pl.from_arrow(customers)["customer_id"].ne(victim).to_arrow())
        engine.overwrite(table(name), engine.from_arrow(kept))

    ctx = RunContext(run_date=date.fromisoformat(FLOW_DAYS[-1]), run_id=f"broken-{lake_copy['name']}",
                     started_at=datetime.now(UTC),
                     overrides={"lake_root": str(root), "landing_root": str(lake_copy["landing"]),
                                **lake_copy["engine"]})
    state = publish(ctx, return_state=True)
    assert state.is_failed()
    message = str(state.message) + repr(state.result(raise_on_failure=False))
    assert "gold not released" in message and "ref.customer_id->gold.dim_customer" in message
    assert f"release {before.release_id} stays current" in message

    assert releases.current() == before, "the manifest is untouched"
    assert engine.version(dim) > before.versions[dim.name], "the run did rewrite gold; only the release was held"
    assert victim not in {r["customer_id"] for r in engine.to_arrow(engine.scan(dim)).to_pylist()}
    # Readers: the CLI reads gold at the released version, where the customer still is.
    shown = runner.invoke(app, ["show", "gold.dim_customer", "--lake-root", str(root), "--limit", "10000"])
    assert shown.exit_code == 0, shown.output
    assert f"version {before.versions[dim.name]}, release {before.release_id}" in shown.output
    assert victim in shown.output
    assert len(released_dim) == engine.count(engine.scan(dim, version=releases.version_of(dim.name)))
    # The Python API reads the released version too, whichever engine wrote the lake.
    from lakehouse.flows.api import read

    api_rows = read("gold.dim_customer", lake_root=str(root)).collect()
    assert api_rows.height == len(released_dim) and victim in api_rows["customer_id"].to_list()


def test_gold_without_a_release_is_not_shown(tmp_path):
    releases = Releases(Lake(str(tmp_path / "lake")))
    with pytest.raises(NotReleasedError, match="expected a gold release"):
        releases.version_of("gold.fact_orders")
    releases.publish({"gold.dim_date": 0}, run_id="r1", run_date=date(2026, 11, 1))
    with pytest.raises(NotReleasedError, match=r"expected 'gold.fact_orders' in gold release gold-000001"):
        releases.version_of("gold.fact_orders")
    second = releases.publish({"gold.dim_date": 3}, run_id="r2", run_date=date(2026, 11, 2))
    assert (second.release_id, releases.version_of("gold.dim_date")) == ("gold-000002", 3)
    assert [r.run_id for r in releases.history()] == ["r1", "r2"]
    with pytest.raises(ValueError, match="at least one"):
        releases.publish({}, run_id="r3", run_date=date(2026, 11, 3))


def test_a_row_drop_beyond_the_declared_share_fails_the_audit():
    from lakehouse.tasks.transforms.audit import check_row_drop

    fact = table("gold.fact_orders")
    assert fact.max_row_drop == 0.10
    assert check_row_drop(fact, 900, 1000) is None
    failure = check_row_drop(fact, 899, 1000)
    assert failure is not None and failure.rule == "rows.dropped" and failure.failing_rows == 101
    assert "keep at least 90% of the 1,000 rows" in failure.reason
    assert check_row_drop(fact, 0, None) is None, "nothing to compare with before the first release"
    assert check_row_drop(table("gold.dim_date"), 1, 1000) is None, "undeclared: not checked"


@pytest.mark.slow
def test_losing_half_the_orders_holds_the_release(lake_copy, prefect_harness):
    import narwhals as nw

    from lakehouse.flows.daily import publish

    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    releases = Releases(Lake(str(root)))
    before = releases.current()
    orders = table("silver.orders")
    kept = engine.to_arrow(engine.scan(orders).filter(nw.col("order_id").str.ends_with("0")
                                                      | nw.col("order_id").str.ends_with("1")))
    engine.overwrite(orders, engine.from_arrow(kept))
    ctx = RunContext(run_date=date.fromisoformat(FLOW_DAYS[-1]), run_id="drop", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(root), "landing_root": str(lake_copy["landing"]), **lake_copy["engine"]})
    state = publish(ctx, return_state=True)
    assert state.is_failed()
    message = repr(state.result(raise_on_failure=False))
    assert "gold.fact_orders rows.dropped" in message
    assert releases.current() == before


@pytest.mark.slow
def test_an_incremental_release_audits_the_rewritten_partitions(lake_copy, prefect_harness):
    """An orphan written into a rewritten order-date partition fails the (partition-scoped) audit."""
    from lakehouse.tasks.release import AuditFailedError, release_gold

    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    current = Releases(Lake(str(root))).current()
    fact = table("gold.fact_orders")
    day = date.fromisoformat(FLOW_DAYS[-1])
    rows = engine.to_arrow(engine.scan(fact).filter(nw.col("order_date") == nw.lit(day))).to_pylist()
    orphan = {**rows[0], "order_id": "O-ORPHAN", "product_id": "P-NONE"}
    written = engine.overwrite_partitions(fact, engine.from_arrow(pa.Table.from_pylist([*rows, orphan],
                                                                                       schema=fact.arrow_schema)))
    ctx = RunContext(run_date=day, run_id=f"orphan-{lake_copy['name']}", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(root), **lake_copy["engine"]})
    with pytest.raises(AuditFailedError, match=r"ref.product_id->gold.dim_product \(1 rows\)"):
        release_gold.fn(ctx, {**current.versions, fact.name: written.version}, [day])
    assert Releases(Lake(str(root))).current() == current


@pytest.mark.slow
def test_an_incremental_release_audits_every_partition_when_a_dimension_lost_a_key(lake_copy, prefect_harness):
    """A dim_customer row whose customer_sk changed (its customer still there) orphans the fact rows of a
    partition the run did not rewrite: the audit of a run that rewrote only the last day still finds them."""
    from lakehouse.tasks.release import AuditFailedError, release_gold

    engine, root = lake_copy["engine_impl"], lake_copy["root"]
    current = Releases(Lake(str(root))).current()
    dim, fact = table("gold.dim_customer"), table("gold.fact_orders")
    day = date.fromisoformat(FLOW_DAYS[-1])
    facts = pl.from_arrow(engine.to_arrow(engine.scan(fact, version=current.versions[fact.name])
                                          .select("customer_sk", "order_date")))
    earlier_only = (facts.filter(pl.col("order_date") < day)
                    .join(facts.filter(pl.col("order_date") == day), on="customer_sk", how="anti"))
    gone = earlier_only.get_column("customer_sk").sort()[0]
    versions = pl.from_arrow(engine.to_arrow(engine.scan(dim, version=current.versions[dim.name])))
    changed = versions.with_columns(customer_sk=pl.when(pl.col("customer_sk") == gone).then(pl.lit("0" * 16))
                                    .otherwise(pl.col("customer_sk")))
    written = engine.overwrite(dim, engine.from_arrow(changed.to_arrow()))
    ctx = RunContext(run_date=day, run_id=f"lost-sk-{lake_copy['name']}", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(root), **lake_copy["engine"]})
    with pytest.raises(AuditFailedError, match=r"ref.customer_sk->gold.dim_customer \((\d+) rows\)") as failed:
        release_gold.fn(ctx, {**current.versions, dim.name: written.version}, [day])
    assert "ref.customer_id->" not in str(failed.value), "the customer itself is still there"
    assert Releases(Lake(str(root))).current() == current


def test_rollback_makes_an_earlier_release_current_again(pristine_lake, tmp_path):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    releases = Releases(Lake(str(root)))
    first, second = releases.history()  # day 1's release, then day 2's
    result = runner.invoke(app, ["rollback", "--to", first.release_id, "--lake-root", str(root)])
    assert result.exit_code == 0, result.output
    current = releases.current()
    assert current.seq == second.seq + 1 and current.versions == first.versions
    assert current.run_date == first.run_date
    # Readers now see the first release's rows.
    engine = get_backend("polars", Lake(str(root)))
    fact = table("gold.fact_orders")
    assert releases.version_of(fact.name) == first.versions[fact.name]
    assert engine.count(engine.scan(fact, version=first.versions[fact.name])) < engine.count(
        engine.scan(fact, version=second.versions[fact.name]))
    again = runner.invoke(app, ["rollback", "--to", first.release_id, "--lake-root", str(root)])
    assert again.exit_code == 2 and "nothing to roll back" in again.output.replace("\n", "")
    unknown = runner.invoke(app, ["rollback", "--to", "gold-999999", "--lake-root", str(root)])
    assert unknown.exit_code == 2 and first.release_id in unknown.output.replace("\n", "")
