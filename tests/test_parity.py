"""Parity: the daily flow on the laptop engine and on Spark (Sail) leaves the same tables, and each engine reads
what the other wrote.

Tables are compared by ``tests/lakes.py`` (types and row order normalised, a stated tolerance for doubles).
"""

from __future__ import annotations

import polars as pl
import pytest
from deltalake import DeltaTable
from lakes import assert_same_rows, normalised

from lakehouse.backends import Lake, get_backend
from lakehouse.contracts.catalog import TABLES, table
from lakehouse.deployments.settings import SparkSettings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(TABLES))
def test_both_engines_leave_the_same_table(daily_lakes, name):
    polars_lake, spark_lake = daily_lakes("polars"), daily_lakes("sail")
    left, right = normalised(polars_lake["root"], name), normalised(spark_lake["root"], name)
    assert (left is None) == (right is None), f"{name} written by one engine only"
    if left is not None and right is not None:
        assert_same_rows(name, left, right)


def test_the_comparison_would_catch_a_difference(daily_lakes):
    left = normalised(daily_lakes("polars")["root"], "gold.fact_orders")
    assert left is not None and left.height > 0
    changed = left.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("x")).otherwise(pl.col("status"))
                                .alias("status"))
    with pytest.raises(AssertionError):
        assert_same_rows("gold.fact_orders", left, changed)


@pytest.mark.parametrize(("writer", "reader"), [("polars", "sail"), ("sail", "polars")])
def test_each_engine_reads_what_the_other_wrote(daily_lakes, sail_url, writer, reader):
    """Read every table of one engine's lake with the other engine: same rows as delta-rs sees."""
    root = daily_lakes(writer)["root"]
    lake = Lake(str(root))
    engine = get_backend("spark", lake, SparkSettings(remote=sail_url)) if reader == "sail" else get_backend("polars", lake)
    for name in ("bronze.kafka.order_events", "silver.orders", "quarantine.silver.orders", "gold.fact_orders",
                 "gold.customer_360"):
        spec = table(name)
        got = pl.from_arrow(engine.to_arrow(engine.scan(spec)))
        assert isinstance(got, pl.DataFrame)
        expected = pl.from_arrow(DeltaTable(lake.uri(spec)).to_pyarrow_table())
        assert isinstance(expected, pl.DataFrame)
        assert got.height == expected.height > 0, name
        keys = list(spec.keys or spec.columns)
        ints = {c: pl.Int64 for c, t in got.schema.items() if t.is_integer() and c in keys}
        assert got.select(keys).cast(ints).sort(keys).equals(  # type: ignore[arg-type]
            expected.select(keys).cast(ints).sort(keys)), name  # type: ignore[arg-type]
        version = engine.version(spec)
        assert version is not None and engine.count(engine.scan(spec, version=0)) > 0


def test_tables_use_only_delta_features_both_engines_read(daily_lakes):
    for engine in ("polars", "sail"):
        root = daily_lakes(engine)["root"]
        for name, spec in TABLES.items():
            path = root / spec.path
            if not (path / "_delta_log").is_dir():
                continue
            protocol = DeltaTable(str(path)).protocol()
            assert protocol.min_reader_version <= 3, (engine, name)
            features = set(protocol.reader_features or ()) | set(protocol.writer_features or ())
            assert not features & {"deletionVectors", "columnMapping"}, (engine, name, features)
