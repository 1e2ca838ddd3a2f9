"""The testing kit users import (docs/testing.md): its examples are this file's tests.

Each paragraph of a Python block in docs/testing.md is a verbatim piece of this file; tests/test_docs.py fails
when they drift apart.
"""

from __future__ import annotations

from datetime import date

import pytest

from lakehouse.contracts.catalog import TABLES
from lakehouse.tasks.transforms.gold import build_product_performance
from lakehouse.testing import frame, rows, run_days


def test_product_performance_counts_kept_orders_only(lakehouse_engine):
    d = date(2026, 11, 1)
    fact_orders = frame(lakehouse_engine, {
        "order_date": [d, d, d],
        "product_id": ["P1", "P1", "P2"],
        "customer_id": ["C1", "C2", "C1"],
        "quantity": [2, 5, 1],
        "amount_usd": [20.0, 50.0, 9.99],
        "is_cancelled": [False, True, False],
    })
    out = rows(build_product_performance(fact_orders), "product_id")
    assert [(r["product_id"], r["orders"], r["units"], r["revenue_usd"], r["cancelled_orders"]) for r in out] == [
        ("P1", 2, 2, 20.0, 1),
        ("P2", 1, 1, 9.99, 0),
    ]
    assert out[0]["cancellation_rate"] == 0.5


def test_one_day_of_the_flow_releases_gold(prefect_harness, sample_landing, tmp_path):
    landing = sample_landing(days=1, scale=0.01)  # generated landing files for 2026-11-01
    lake = run_days("polars", tmp_path / "lake", landing, days=1)
    summaries = lake.summaries[date(2026, 11, 1)]
    assert {s["table"] for s in summaries} >= {name for name in TABLES if name.startswith("gold.")}
    customers = lake.table("gold.customer_360")
    assert customers.height > 0
    assert customers["customer_id"].is_unique().all()


def test_both_engines_build_the_same_customer_360(daily_lake):
    polars_lake, spark_lake = daily_lake("polars"), daily_lake("sail")
    left = polars_lake.table("gold.customer_360").sort("customer_id")
    right = spark_lake.table("gold.customer_360").sort("customer_id")
    assert left.height == right.height > 0
    assert left.select("customer_id", "order_count").equals(right.select("customer_id", "order_count"))


def test_run_days_names_what_it_expected():
    with pytest.raises(ValueError, match="expected engine 'polars', 'sail' or 'sail-cluster', got 'duckdb'"):
        run_days("duckdb", None, None, days=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs spark_remote"):
        run_days("sail", None, None, days=1)  # type: ignore[arg-type]


def test_a_lake_keeps_a_copy_as_each_day_left_it(daily_lake):
    lake = daily_lake("polars")
    first, last = lake.days
    assert lake.after(last).is_dir() and lake.after(first) != lake.after(last)
    with pytest.raises(KeyError, match="expected one of the lake's days"):
        lake.after(date(2020, 1, 1))
