"""The catalog's contracts compiled to Narwhals (what both engines check on every write): each check kind counts
exactly the rows pandera rejects (the same contract as a pandera schema), on every engine."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from lakehouse.contracts.catalog import table
from lakehouse.contracts.checks import UnsupportedCheckError, compile_schema, count_violations
from lakehouse.contracts.contract import Check, Column, Contract
from lakehouse.testing import to_engine

SCHEMA = Contract("t", {
    "id": Column(pl.Utf8, nullable=False, unique=True),
    "ccy": Column(pl.Utf8, [Check.isin(["USD", "EUR"])], nullable=True),
    "qty": Column(pl.Int64, [Check.in_range(1, 10)], nullable=True),
    "price": Column(pl.Float64, [Check.gt(0)], nullable=True),
    "stock": Column(pl.Int64, [Check.ge(0), Check.le(100)], nullable=True),
    "hmac": Column(pl.Utf8, [Check.str_matches(r"^[0-9a-f]{4}$")], nullable=True),
}, unique=("ccy", "qty"))

TYPES = SCHEMA.polars_schema
GOOD = {"id": "a", "ccy": "USD", "qty": 1, "price": 1.0, "stock": 0, "hmac": "00ff"}
BREAKS = [  # (row overrides, (column, check) it breaks)
    ({"id": None}, ("id", "not_nullable")),
    ({"ccy": "GBP"}, ("ccy", "isin")),
    ({"qty": 11}, ("qty", "in_range")),
    ({"price": 0.0}, ("price", "greater_than")),
    ({"stock": -1}, ("stock", "greater_than_or_equal_to")),
    ({"stock": 101}, ("stock", "less_than_or_equal_to")),
    ({"hmac": "00FF"}, ("hmac", "str_matches")),
]


def frame(engine: str, rows: list[dict]):
    return to_engine(engine, pl.DataFrame(rows, schema=TYPES))


def test_a_good_frame_has_no_violations_and_is_counted(transform_engine):
    rows = [GOOD, GOOD | {"id": "b", "qty": 2, "ccy": None, "hmac": None}]
    assert count_violations(frame(transform_engine, rows), SCHEMA) == (2, [])


@pytest.mark.parametrize(("override", "broken"), BREAKS, ids=[b[1] for _, b in BREAKS])
def test_each_check_kind_counts_the_rows_pandera_rejects(transform_engine, override, broken):
    rows = [GOOD, GOOD | {"id": "b", "qty": 2} | override]
    n, problems = count_violations(frame(transform_engine, rows), SCHEMA)
    assert (n, problems) == (2, [(*broken, 1)])
    from pandera.errors import SchemaErrors

    with pytest.raises(SchemaErrors):  # pandera agrees the frame is bad
        SCHEMA.pandera().validate(pl.DataFrame(rows, schema=TYPES), lazy=True)
    SCHEMA.pandera().validate(pl.DataFrame([GOOD], schema=TYPES), lazy=True)  # and the good row is good


def test_uniqueness_of_a_column_and_of_a_column_set(transform_engine):
    rows = [GOOD, GOOD]  # same id, same (ccy, qty)
    assert count_violations(frame(transform_engine, rows), SCHEMA) == (2, [("id", "unique", 1), (None, "unique(ccy, qty)", 1)])


def test_every_catalog_contract_compiles_and_an_unknown_check_is_named():
    for name in ("silver.orders", "gold.customer_segments", "gold.dim_date", "quarantine.silver.orders"):
        assert compile_schema(table(name).schema)
    odd = Contract("odd", {"x": Column(pl.Utf8, (Check("str_length", {"min_value": 1, "max_value": 2}),))})
    with pytest.raises(UnsupportedCheckError, match="str_length"):
        compile_schema(odd)


def test_nullability_of_dates_and_timestamps():
    schema = Contract("dt", {"d": Column(pl.Date, nullable=False), "t": Column(pl.Datetime("us", "UTC"), nullable=True)})
    data = pl.DataFrame({"d": [date(2026, 11, 1), None], "t": [datetime(2026, 11, 1, tzinfo=UTC), None]})
    assert count_violations(to_engine("polars", data), schema) == (2, [("d", "not_nullable", 1)])
