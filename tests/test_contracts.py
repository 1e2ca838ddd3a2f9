"""The catalog's contracts compiled to Narwhals (what both engines check on every write): each check kind counts
exactly the rows pandera rejects (the same contract as a pandera schema), on every engine."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from lakehouse.contracts.catalog import table
from lakehouse.contracts.checks import UnsupportedCheckError, compile_schema, count_violations
from lakehouse.contracts.contract import Check, Column, Contract
from lakehouse.contracts.types import DATE, FLOAT64, INT64, STRING, UTC_TS
from lakehouse.testing import to_engine

SCHEMA = Contract("t", {
    "id": Column(STRING, nullable=False, unique=True),
    "ccy": Column(STRING, [Check.isin(["USD", "EUR"])], nullable=True),
    "qty": Column(INT64, [Check.in_range(1, 10)], nullable=True),
    "price": Column(FLOAT64, [Check.gt(0)], nullable=True),
    "stock": Column(INT64, [Check.ge(0), Check.le(100)], nullable=True),
    "hmac": Column(STRING, [Check.str_matches(r"^[0-9a-f]{4}$")], nullable=True),
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
    odd = Contract("odd", {"x": Column(STRING, (Check("str_length", {"min_value": 1, "max_value": 2}),))})
    with pytest.raises(UnsupportedCheckError, match="str_length"):
        compile_schema(odd)


def test_nullability_of_dates_and_timestamps():
    schema = Contract("dt", {"d": Column(DATE, nullable=False), "t": Column(UTC_TS, nullable=True)})
    data = pl.DataFrame({"d": [date(2026, 11, 1), None], "t": [datetime(2026, 11, 1, tzinfo=UTC), None]})
    assert count_violations(to_engine("polars", data), schema) == (2, [("d", "not_nullable", 1)])


def test_column_types_are_declared_once_and_named_when_wrong():
    """A declared type gives each engine its own type object; anything else is refused with the expected names."""
    import narwhals as nw
    import pyarrow as pa

    from lakehouse.contracts.types import BOOL, list_of

    expected = {STRING: (pl.String, nw.String(), pa.string()), INT64: (pl.Int64, nw.Int64(), pa.int64()),
                FLOAT64: (pl.Float64, nw.Float64(), pa.float64()), DATE: (pl.Date, nw.Date(), pa.date32()),
                BOOL: (pl.Boolean, nw.Boolean(), pa.bool_()),
                UTC_TS: (pl.Datetime("us", "UTC"), nw.Datetime("us", "UTC"), pa.timestamp("us", tz="UTC")),
                list_of(STRING): (pl.List(pl.String), nw.List(nw.String()), pa.list_(pa.string()))}
    for dtype, (polars_type, narwhals_type, arrow_type) in expected.items():
        assert (dtype.polars(), dtype.narwhals(), dtype.arrow()) == (polars_type, narwhals_type, arrow_type), dtype
    with pytest.raises(TypeError, match=r"expected a column type of contracts/types.py .*got String"):
        Column(pl.Utf8)
    assert table("silver.orders").arrow_schema.field("order_ts").type == pa.timestamp("us", tz="UTC")
