"""Adding a table is one declaration and one function (docs/extending.md): a toy gold model declared the way
contracts/catalog.py declares its tables, with one builder registered the way tasks/gold.py registers its own,
is built by the daily flow, audited, released, recorded in the ledger and the lineage events, and documented by
the generated reference, with no other edit."""

from __future__ import annotations

import shutil
from datetime import date

import narwhals as nw
import polars as pl
import pytest

from lakehouse.backends import Lake, get_backend
from lakehouse.backends.releases import Releases
from lakehouse.contracts import catalog
from lakehouse.contracts.catalog import Reference, TableSpec, build_order, table
from lakehouse.contracts.contract import Check, Contract, required
from lakehouse.contracts.types import INT64, STRING
from lakehouse.deployments.settings import SparkSettings
from lakehouse.tasks import gold as gold_tasks
from lakehouse.tasks.ledger import read_ledger
from lakehouse.tasks.lineage import lineage_events
from lakehouse.tasks.transforms.schema import to_schema

NAME = "gold.product_units"
TOY = TableSpec(
    "gold", "product_units",
    Contract(NAME, {"product_id": required(STRING, unique=True), "units": required(INT64, Check.ge(0))}),
    inputs=("gold.fact_orders",), keys=("product_id",), mode="overwrite",
    references=(Reference(("product_id",), "gold.dim_product", ("product_id",)),),
    description="Units ordered per product, all time (a toy model).")
DOCS = {"product_id": "Product id; joins to dim_product.", "units": "Units ordered, all time."}


def units_per_product(read: gold_tasks.Inputs) -> nw.LazyFrame:
    fact = read("gold.fact_orders")
    return to_schema(fact.group_by("product_id").agg(nw.col("quantity").sum().alias("units")), TOY)


def unknown_product(read: gold_tasks.Inputs) -> nw.LazyFrame:
    """Every product id changed to one dim_product does not hold (unique still, so only the audit objects)."""
    return units_per_product(read).with_columns(nw.concat_str([nw.lit("x-"), nw.col("product_id")]).alias("product_id"))


@pytest.fixture
def toy_model(monkeypatch):
    """The two edits docs/extending.md asks for: the declaration (and its column meanings) and the builder."""
    def add(builder):
        monkeypatch.setitem(catalog.TABLES, NAME, TOY)
        monkeypatch.setitem(catalog.GOLD_COLUMN_DOCS, NAME, DOCS)
        monkeypatch.setitem(gold_tasks.BUILDERS, NAME, builder)
    return add


def _second_day(daily_lakes, engine: str, tmp_path):
    built = daily_lakes(engine)
    root = tmp_path / "lake"
    shutil.copytree(built["first_day"], root)
    return built, root


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["polars", "sail"])
def test_a_gold_model_added_by_one_declaration_and_one_function_is_built_audited_released_and_documented(
        daily_lakes, toy_model, engine, tmp_path):
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.flows.reference import gold_reference

    built, root = _second_day(daily_lakes, engine, tmp_path)  # the first day is built before the model is added
    toy_model(units_per_product)
    assert build_order("gold").index(NAME) > build_order("gold").index("gold.fact_orders")
    day = date(2026, 11, 2)
    daily_lakehouse(run_date=day, lake_root=str(root), landing_root=str(built["landing"]), **built["engine"])

    lake = Lake(str(root))
    release = Releases(lake).current()
    assert release.run_date == day and NAME in release.versions
    spark = SparkSettings(**({"remote": built["engine"]["spark_remote"]} if built["engine"] else {}))
    reader = get_backend(built["engine"].get("backend", "polars"), lake, spark)
    units = {r["product_id"]: r["units"] for r in reader.to_arrow(reader.scan(TOY, version=release.versions[NAME])).to_pylist()}
    fact = reader.to_arrow(reader.scan(table("gold.fact_orders"), version=release.versions["gold.fact_orders"]))
    expected = pl.from_arrow(fact).group_by("product_id").agg(pl.col("quantity").sum())
    assert units == dict(expected.iter_rows()) and units
    ledger = [r for r in read_ledger(lake) if r["task"] == f"gold-{NAME}" and r["run_date"] == day]
    assert [r["status"] for r in ledger] == ["completed"] and '"gold.fact_orders"' in ledger[0]["versions_read"]
    outputs = {o["name"] for e in lineage_events(lake) if e["eventType"] == "COMPLETE" for o in e.get("outputs", [])}
    assert str((root / "gold" / "product_units").resolve()) in outputs
    assert f"## `{NAME}`" in gold_reference() and "| `units` | Units ordered, all time. |" in gold_reference()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["polars", "sail"])
def test_the_release_audit_checks_the_added_model_like_any_other(daily_lakes, toy_model, engine, tmp_path):
    from lakehouse.flows.daily import daily_lakehouse

    built, root = _second_day(daily_lakes, engine, tmp_path)  # the first day is built before the model is added
    toy_model(unknown_product)
    before = Releases(Lake(str(root))).current()
    state = daily_lakehouse(run_date=date(2026, 11, 2), lake_root=str(root), landing_root=str(built["landing"]),
                            return_state=True, **built["engine"])
    assert state.is_failed()
    assert f"{NAME} ref.product_id->gold.dim_product" in str(state.result(raise_on_failure=False))
    assert Releases(Lake(str(root))).current() == before  # the previous release stays current
