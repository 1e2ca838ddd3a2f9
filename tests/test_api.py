"""The Python API (flows/api.py): gold read at a release (current, by id, by run date), other layers at their
latest version, clear errors, and a day run from Python as a Prefect flow run."""

from __future__ import annotations

import shutil
from datetime import date

import polars as pl
import pytest
from conftest import FLOW_DAYS
from deltalake import DeltaTable

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import NotReleasedError, Releases
from lakehouse.contracts.catalog import table
from lakehouse.flows.api import read, run_day

FIRST, SECOND = (date.fromisoformat(d) for d in FLOW_DAYS)


def _at(root, name: str, version: int) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(str(root / table(name).path), version=version).to_pyarrow_table())


def test_gold_is_read_at_the_release_asked_for(pristine_lake):
    root = pristine_lake["root"]
    first, second = Releases(Lake(str(root))).history()
    name = "gold.fact_orders"
    assert first.versions[name] != second.versions[name]
    current = read(name, lake_root=str(root)).collect()
    assert current.sort("order_id").equals(_at(root, name, second.versions[name]).sort("order_id"))
    by_id = read(name, lake_root=str(root), as_of=first.release_id).collect()
    assert by_id.sort("order_id").equals(_at(root, name, first.versions[name]).sort("order_id"))
    assert by_id.height < current.height
    by_day = read(name, lake_root=str(root), as_of=FIRST).collect()
    assert by_day.height == by_id.height
    assert read(name, lake_root=str(root), as_of=SECOND.isoformat()).collect().height == current.height


def test_other_layers_are_read_at_their_latest_version(pristine_lake):
    root = pristine_lake["root"]
    orders = read("silver.orders", lake_root=str(root)).collect()
    latest = DeltaTable(str(root / table("silver.orders").path))
    assert orders.height == latest.to_pyarrow_table().num_rows > 0
    with pytest.raises(ValueError, match="expected as_of only for gold tables"):
        read("silver.orders", lake_root=str(root), as_of=FIRST)


def test_api_errors_name_what_was_expected(pristine_lake, tmp_path):
    root = str(pristine_lake["root"])
    with pytest.raises(KeyError):
        read("gold.nope", lake_root=root)
    with pytest.raises(NotReleasedError, match="expected a gold release id among the recent ones"):
        read("gold.fact_orders", lake_root=root, as_of="gold-999999")
    with pytest.raises(NotReleasedError, match="made by a run of 2026-10-01 or earlier"):
        read("gold.fact_orders", lake_root=root, as_of="2026-10-01")
    with pytest.raises(ValueError, match="expected as_of as a release id"):
        read("gold.fact_orders", lake_root=root, as_of="yesterday")
    with pytest.raises(NotReleasedError, match="found none"):
        read("gold.fact_orders", lake_root=str(tmp_path / "empty"))
    with pytest.raises(LookupError, match="never written"):
        read("silver.orders", lake_root=str(tmp_path / "empty"))


def test_run_day_runs_the_flow_from_python(daily_lakes, prefect_harness, tmp_path):
    built = daily_lakes("polars")
    root = tmp_path / "lake"
    shutil.copytree(built["first_day"], root)
    summaries = run_day(SECOND.isoformat(), lake_root=str(root), landing_root=str(built["landing"]))
    assert {s["table"] for s in summaries} >= {"gold.fact_orders", "silver.orders"}
    releases = Releases(Lake(str(root))).history()
    assert [r.run_date for r in releases] == [FIRST, SECOND]
    ours = read("gold.fact_orders", lake_root=str(root)).collect().drop("run_id", strict=False).sort("order_id")
    theirs = read("gold.fact_orders", lake_root=str(built["pristine"])).collect().drop("run_id", strict=False)
    assert ours.equals(theirs.sort("order_id"))
