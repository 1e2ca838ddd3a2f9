"""Gold builders on small hand-written silver frames: exact output rows and the catalog's schemas, per engine."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import narwhals as nw
import polars as pl
import pytest
from conftest import plan_nodes

from lakehouse.contracts.catalog import GOLD_COLUMN_DOCS, table, tables
from lakehouse.contracts.landing import OPEN_DEAL_STAGES
from lakehouse.tasks.transforms.gold import (
    RFM_THRESHOLDS,
    SEGMENT_RULES,
    _epoch_day,
    _iso_from_weekday,
    build_customer_360,
    build_customer_segments,
    build_dim_customer,
    build_dim_date,
    build_dim_product,
    build_fact_orders,
    build_product_performance,
    changed_order_dates,
    events_that_can_count,
    oldest_change_day,
)
from lakehouse.testing import to_engine

D = date.fromisoformat


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


_DEFAULTS: dict[Any, Any] = {pl.Utf8: "x", pl.Float64: 1.0, pl.Int64: 1, pl.Date: D("2026-11-01"), pl.Boolean: False}


def _row(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` completed to a full row of table ``name``: nullable columns None, required ones a default."""
    spec = table(name)
    unknown = set(values) - set(spec.columns)
    assert not unknown, f"{unknown} are not columns of {name}"
    row = {}
    for col, dtype in spec.polars_schema.items():
        default = None if spec.schema.columns[col].nullable else _DEFAULTS.get(dtype, ts("2026-11-01T00:00"))
        row[col] = values.get(col, default)
    return row


@pytest.fixture
def make(transform_engine) -> Callable[..., nw.LazyFrame]:
    """``make(table_name, rows)``: a lazy frame of the engine under test shaped like that catalog table."""

    def _make(name: str, rows: Iterable[dict[str, Any]] = ()) -> nw.LazyFrame:
        spec = table(name)
        frame = pl.LazyFrame([_row(name, r) for r in rows], schema=spec.polars_schema)
        return to_engine(transform_engine, frame)

    return _make


def collect(frame: nw.LazyFrame, name: str) -> list[dict[str, Any]]:
    """Rows of a builder's output sorted by the table's keys, after checking its schema is the catalog's."""
    spec = table(name)
    df = frame.collect(backend="polars").to_native()
    assert df.to_arrow().schema == spec.arrow_schema
    return df.sort(list(spec.keys)).to_dicts()


def fact(order_id: str, customer_id: str, order_date: str, amount_usd: float, *, cancelled: bool = False,
         product_id: str = "p1", quantity: int = 1) -> dict[str, Any]:
    return {
        "order_id": order_id, "customer_id": customer_id, "product_id": product_id, "quantity": quantity,
        "order_date": D(order_date), "amount_usd": amount_usd, "is_cancelled": cancelled,
        "status": "cancelled" if cancelled else "delivered",
    }


# ----------------------------------------------------------------------------------------- fact_orders
def test_fact_orders_status_from_newer_event_only(make):
    def order(order_id, status, updated, order_date="2026-11-01"):
        return {"order_id": order_id, "customer_id": "c1", "product_id": "p1", "quantity": 2, "unit_price": 5.0,
                "currency": "EUR", "amount": 10.0, "fx_rate": 0.8, "amount_usd": 12.5, "status": status,
                "order_ts": ts(f"{order_date}T08:00"), "order_date": D(order_date), "updated_at": ts(updated)}

    def event(event_id, order_id, status, at):
        return {"event_id": event_id, "order_id": order_id, "status": status, "event_ts": ts(at)}

    orders = make("silver.orders", [
        order("o1", "placed", "2026-11-01T10:00"),     # two newer events: the latest wins
        order("o2", "shipped", "2026-11-01T12:00"),    # only an older event: the order's status stays
        order("o3", "delivered", "2026-11-01T10:00"),  # no events
        order("o4", "placed", "2026-11-01T10:00"),     # two events at the same instant: larger event_id wins
        order("o5", "cancelled", "2026-11-01T10:00"),  # event at exactly updated_at is not newer
        order("o6", "placed", "2025-03-09T10:00", order_date="2025-03-09"),
    ])
    events = make("silver.order_events", [
        event("e1", "o1", "shipped", "2026-11-01T11:00"),
        event("e2", "o1", "delivered", "2026-11-01T12:00"),
        event("e3", "o2", "cancelled", "2026-11-01T09:00"),
        event("e4a", "o4", "shipped", "2026-11-01T11:00"),
        event("e4b", "o4", "cancelled", "2026-11-01T11:00"),
        event("e5", "o5", "delivered", "2026-11-01T10:00"),
        event("e9", "o9", "cancelled", "2026-11-01T10:00"),  # an order silver does not have: no row
    ])

    def expected(order_id, status, updated, order_date="2026-11-01", date_key=20261101):
        return {"order_id": order_id, "order_date": D(order_date), "date_key": date_key, "customer_id": "c1",
                "customer_sk": "00000000000000c1", "product_id": "p1", "quantity": 2, "unit_price": 5.0, "currency": "EUR", "amount": 10.0,
                "fx_rate": 0.8, "amount_usd": 12.5, "status": status, "is_cancelled": status == "cancelled",
                "order_ts": ts(f"{order_date}T08:00"), "updated_at": ts(updated)}

    dim = make("gold.dim_customer", [{"customer_id": "c1", "customer_sk": "00000000000000c1",
                                      "valid_from": ts("2026-01-01T00:00"), "is_current": True}])
    assert collect(build_fact_orders(orders, events, dim), "gold.fact_orders") == [
        expected("o1", "delivered", "2026-11-01T12:00"),
        expected("o2", "shipped", "2026-11-01T12:00"),
        expected("o3", "delivered", "2026-11-01T10:00"),
        expected("o4", "cancelled", "2026-11-01T11:00"),
        expected("o5", "cancelled", "2026-11-01T10:00"),
        expected("o6", "placed", "2025-03-09T10:00", order_date="2025-03-09", date_key=20250309),
    ]


def test_the_fact_reads_the_order_events_once(make):
    """The latest event per order is one window over the events, not aggregations joined back, each reading the
    events again: a node added to the events' plan is in the fact's plan once (on Spark each read of a Delta table
    is read and resolved again)."""
    orders = make("silver.orders")
    events = make("silver.order_events")
    dim = make("gold.dim_customer")
    marked = events.with_columns(nw.lit("marker").alias("_marker"))
    node = plan_nodes(marked) - plan_nodes(events)
    plain, more = (plan_nodes(build_fact_orders(orders, e, dim)) for e in (events, marked))
    assert node > 0 and more - plain == node


@pytest.mark.parametrize("whole", [True, False])
def test_the_fact_built_whole_reads_the_orders_once_and_a_subset_looks_its_events_and_customers_up(make, whole):
    """Built whole, the fact does not join the events and the customers with the orders (a join that would drop
    nothing the fact's own left joins keep): the orders' plan is in the fact's plan once. Built for some order
    dates, only their events and customers are read: the orders' plan is there three times. The facts are the
    same either way."""
    from lakehouse.tasks.gold import Inputs, _fact_orders

    orders = make("silver.orders", [
        {"order_id": "o1", "customer_id": "c1", "order_ts": ts("2026-11-01T08:00"), "order_date": D("2026-11-01"),
         "updated_at": ts("2026-11-01T09:00"), "status": "placed"},
        {"order_id": "o2", "customer_id": "c2", "order_ts": ts("2026-11-02T08:00"), "order_date": D("2026-11-02"),
         "updated_at": ts("2026-11-02T09:00"), "status": "placed"}])
    events = make("silver.order_events", [
        {"event_id": "e1", "order_id": "o1", "status": "shipped", "event_ts": ts("2026-11-02T10:00"),
         "event_date": D("2026-11-02")},
        {"event_id": "e9", "order_id": "o9", "status": "shipped", "event_ts": ts("2026-11-02T11:00"),
         "event_date": D("2026-11-02")}])  # an event of no order: in no fact row either way
    dim = make("gold.dim_customer", [
        {"customer_sk": "sk1", "customer_id": "c1", "valid_from": ts("2026-10-01T00:00"), "valid_to": None,
         "is_current": True},
        {"customer_sk": "sk3", "customer_id": "c3", "valid_from": ts("2026-10-01T00:00"), "valid_to": None,
         "is_current": True}])
    marked = orders.with_columns(nw.lit("marker").alias("_marker")).drop("_marker")

    def fact(of: nw.LazyFrame) -> nw.LazyFrame:
        frames = {"silver.orders": of, "silver.order_events": events, "gold.dim_customer": dim}
        engine = type("RowsOf", (), {"to_arrow": staticmethod(lambda f: f.collect(backend="pyarrow").to_native())})
        return _fact_orders(Inputs(table("gold.fact_orders"), frames.__getitem__, engine, whole=whole))  # type: ignore[arg-type]

    node = plan_nodes(marked) - plan_nodes(orders)
    assert node > 0 and plan_nodes(fact(marked)) - plan_nodes(fact(orders)) == node * (1 if whole else 3)
    got = {r["order_id"]: (r["status"], r["customer_sk"]) for r in fact(orders).collect(backend="polars").rows(named=True)}
    assert got == {"o1": ("shipped", "sk1"), "o2": ("placed", None)}


def test_fact_orders_read_no_event_older_than_every_order_change_and_stay_the_same(make):
    """An incremental build reads events from the day of the orders' oldest updated_at on; the facts equal those
    built from every event (o1's winning event lies between the oldest and the newest change day)."""
    def order(order_id, order_day, updated):
        return {"order_id": order_id, "customer_id": "c1", "order_ts": ts(f"{order_day}T08:00"),
                "order_date": D(order_day), "updated_at": ts(updated), "status": "placed"}

    def event(event_id, order_id, status, at):
        return {"event_id": event_id, "order_id": order_id, "status": status, "event_ts": ts(at),
                "event_date": ts(at).date()}

    orders = make("silver.orders", [
        order("o1", "2026-11-01", "2026-11-01T09:00"),  # the oldest change: events from Nov 1 on are read
        order("o2", "2026-11-03", "2026-11-03T09:00"),
    ])
    events = make("silver.order_events", [
        event("e0", "o1", "cancelled", "2026-10-31T23:59"),  # a day before every change: never counts
        event("e1", "o1", "shipped", "2026-11-02T10:00"),    # newer than o1's change: counts
        event("e2", "o2", "shipped", "2026-11-01T10:00"),    # older than o2's change: does not count
        event("e9", "o9", "shipped", "2026-11-02T10:00"),    # another order's
    ])
    since = oldest_change_day(orders).collect().to_arrow().column("day")[0].as_py()
    assert since == D("2026-11-01")
    read = events_that_can_count(events, orders, since)
    assert sorted(read.select("event_id").collect().to_arrow().column(0).to_pylist()) == ["e1", "e2"]
    dim = make("gold.dim_customer", [{"customer_id": "c1", "customer_sk": "00000000000000c1",
                                      "valid_from": ts("2026-01-01T00:00"), "is_current": True}])
    got = collect(build_fact_orders(orders, read, dim), "gold.fact_orders")
    assert got == collect(build_fact_orders(orders, events, dim), "gold.fact_orders")
    assert [(r["order_id"], r["status"]) for r in got] == [("o1", "shipped"), ("o2", "placed")]
    assert oldest_change_day(make("silver.orders")).collect().to_arrow().column("day")[0].as_py() is None


# ------------------------------------------------------------------------------------------ dimensions
def _sk(customer_id: str, valid_from: str) -> str:
    return hashlib.sha256(f"{customer_id}\x1f{valid_from}".encode()).hexdigest()[:16]


def _version(customer_id: str, at: str, **values: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "updated_at": ts(at), "_record_hash": f"h-{customer_id}-{at}", **values}


def test_dim_customer_is_scd2_whatever_order_the_versions_came_in(make):
    versions = [
        _version("c1", "2026-11-01T10:00", last_name="Ames", country="GB"),
        _version("c1", "2026-11-03T09:30", last_name="Ames", country="FR"),
        _version("c1", "2026-11-02T08:00", last_name="Blake", country="GB"),
        _version("c2", "2026-11-02T00:00"),
    ]
    links = make("silver.customer_crm_links", [
        {"customer_id": "c1", "contact_id": "k1", "account_id": "a1"},
        {"customer_id": "c9", "contact_id": "k9", "account_id": "a9"},  # not a customer: no row
    ])
    in_order = collect(build_dim_customer(make("silver.customer_versions", sorted(versions, key=lambda v: v["updated_at"])),
                                          links), "gold.dim_customer")
    shuffled = collect(build_dim_customer(make("silver.customer_versions", versions[::-1]), links), "gold.dim_customer")
    assert in_order == shuffled
    got = sorted(in_order, key=lambda r: (r["customer_id"], r["valid_from"]))
    assert [(r["customer_id"], r["last_name"], r["country"], r["valid_from"], r["valid_to"], r["is_current"],
             r["crm_account_id"]) for r in got] == [
        ("c1", "Ames", "GB", ts("2026-11-01T10:00"), ts("2026-11-02T08:00"), False, "a1"),
        ("c1", "Blake", "GB", ts("2026-11-02T08:00"), ts("2026-11-03T09:30"), False, "a1"),
        ("c1", "Ames", "FR", ts("2026-11-03T09:30"), None, True, "a1"),
        ("c2", None, None, ts("2026-11-02T00:00"), None, True, None),
    ]
    assert [r["customer_sk"] for r in got] == [
        _sk("c1", "2026-11-01T10:00:00"), _sk("c1", "2026-11-02T08:00:00"), _sk("c1", "2026-11-03T09:30:00"),
        _sk("c2", "2026-11-02T00:00:00")]


def test_fact_orders_carry_the_customer_version_valid_when_ordered(make):
    dim = build_dim_customer(make("silver.customer_versions", [
        _version("c1", "2026-11-02T08:00"), _version("c1", "2026-11-01T10:00"), _version("c1", "2026-11-03T09:30"),
    ]), make("silver.customer_crm_links"))

    def order(order_id, at):
        return {"order_id": order_id, "customer_id": "c1", "order_ts": ts(at), "order_date": ts(at).date(),
                "updated_at": ts(at), "status": "placed"}

    orders = make("silver.orders", [
        order("before-first", "2026-10-30T12:00"),  # before any version: the first one
        order("v1", "2026-11-01T10:00"),  # exactly at valid_from: that version
        order("v1-late", "2026-11-02T07:59"),
        order("v2", "2026-11-02T08:00"),  # valid_to is exclusive
        order("v3", "2026-11-20T00:00"),  # current version
    ])
    got = {r["order_id"]: r["customer_sk"] for r in collect(build_fact_orders(orders, make("silver.order_events"), dim),
                                                            "gold.fact_orders")}
    first, second, third = (_sk("c1", t) for t in ("2026-11-01T10:00:00", "2026-11-02T08:00:00", "2026-11-03T09:30:00"))
    assert got == {"before-first": first, "v1": first, "v1-late": first, "v2": second, "v3": third}


def test_changed_order_dates_follow_the_batch_events_and_new_customer_versions(make):
    """The batch given by its rows' hashes (a replay) or by its bronze files (a daily run) finds the same dates."""
    def order(order_id, customer_id, at, record_hash, source_file="old.parquet"):
        return {"order_id": order_id, "customer_id": customer_id, "order_ts": ts(at), "order_date": ts(at).date(),
                "_record_hash": record_hash, "_source_file": source_file}

    orders = make("silver.orders", [
        order("o1", "c1", "2026-11-01T10:00", "h-o1", "orders-new.parquet"),  # written by the batch
        order("o2", "c2", "2026-11-02T10:00", "h-o2"),  # an event of the batch
        order("o3", "c3", "2026-11-03T10:00", "h-o3"),  # c3 has a new version from before it
        order("o4", "c3", "2026-11-01T09:00", "h-o4"),  # ... but from after this one
        order("o5", "c4", "2026-10-20T10:00", "h-o5"),  # c4's new version is its first: every order
        order("o6", "c5", "2026-10-21T10:00", "h-o6"),  # untouched
    ])
    events = make("silver.order_events", [
        {"event_id": "e1", "order_id": "o2", "_record_hash": "h-e1", "_source_file": "events-new.jsonl"},
        {"event_id": "e2", "order_id": "o6", "_record_hash": "h-e2", "_source_file": "events-old.jsonl"}])
    versions = make("silver.customer_versions", [
        {**_version("c3", "2026-10-01T00:00"), "_record_hash": "h-c3a", "_source_file": "old.parquet"},
        {**_version("c3", "2026-11-02T00:00"), "_record_hash": "h-c3b", "_source_file": "customers-new.parquet"},
        {**_version("c4", "2026-11-05T00:00"), "_record_hash": "h-c4", "_source_file": "customers-new.parquet"},
    ])

    def batch(column, *values):
        return make("bronze.snowflake.orders", [{column: v} for v in values]).select(column)

    def dates(got):
        return sorted(r["order_date"] for r in got.collect(backend="polars").to_native().to_dicts())

    by_rows = changed_order_dates(orders, events, versions, orders_batch=batch("_record_hash", "h-o1", "h-zz"),
                                  events_batch=batch("_record_hash", "h-e1"),
                                  customers_batch=batch("_record_hash", "h-c3b", "h-c4"))
    expected = [D("2026-10-20"), D("2026-11-01"), D("2026-11-02"), D("2026-11-03")]
    assert dates(by_rows) == expected
    by_files = changed_order_dates(orders, events, versions,
                                   orders_batch=batch("_source_file", "orders-new.parquet", "orders-gone.parquet"),
                                   events_batch=batch("_source_file", "events-new.jsonl"),
                                   customers_batch=batch("_source_file", "customers-new.parquet"))
    assert dates(by_files) == expected
    with pytest.raises(ValueError, match="expected a batch of one column, _source_file or _record_hash"):
        changed_order_dates(orders, events, versions, orders_batch=orders.select("order_id"),
                            events_batch=batch("_source_file"), customers_batch=batch("_source_file"))


def test_dim_product_is_the_current_products(make):
    products = make("silver.products", [
        {"product_id": "p2", "sku": "S-2", "product_name": "Lamp", "category": None, "list_price_usd": 20.0},
        {"product_id": "p1", "sku": "S-1", "product_name": "Desk", "category": "home", "list_price_usd": 300.0},
    ])
    assert collect(build_dim_product(products), "gold.dim_product") == [
        {"product_id": "p1", "sku": "S-1", "product_name": "Desk", "category": "home", "list_price_usd": 300.0,
         "updated_at": ts("2026-11-01T00:00")},
        {"product_id": "p2", "sku": "S-2", "product_name": "Lamp", "category": None, "list_price_usd": 20.0,
         "updated_at": ts("2026-11-01T00:00")},
    ]


@pytest.fixture
def engine(transform_engine) -> str:
    return transform_engine


def test_dim_date_calendar_and_iso_weekday(engine):
    days = ["2026-11-01", "2026-11-02", "2026-10-31", "2026-03-31", "2026-04-01", "2026-12-31", "2024-02-29"]
    dates = to_engine(engine, pl.LazyFrame({"date": [D(d) for d in days]}))
    cols = table("gold.dim_date").columns
    assert collect(build_dim_date(dates), "gold.dim_date") == [dict(zip(cols, r, strict=True)) for r in [
        (20240229, D("2024-02-29"), 2024, 1, 2, 29, 4, False),
        (20260331, D("2026-03-31"), 2026, 1, 3, 31, 2, False),
        (20260401, D("2026-04-01"), 2026, 2, 4, 1, 3, False),
        (20261031, D("2026-10-31"), 2026, 4, 10, 31, 6, True),   # Saturday
        (20261101, D("2026-11-01"), 2026, 4, 11, 1, 7, True),    # Sunday: 7 on every engine
        (20261102, D("2026-11-02"), 2026, 4, 11, 2, 1, False),   # Monday
        (20261231, D("2026-12-31"), 2026, 4, 12, 31, 4, False),
    ]]


def test_iso_weekday_normalises_sunday_zero_and_seven(engine):
    # Narwhals' dt.weekday() gives Sunday = 7 on Polars and 0 on PySpark; both must become 7.
    frame = to_engine(engine, pl.LazyFrame({"w": list(range(8))}))
    got = frame.select(_iso_from_weekday(nw.col("w")).alias("iso")).collect(backend="polars").to_native()
    assert got["iso"].to_list() == [7, 1, 2, 3, 4, 5, 6, 7]


def test_epoch_day_matches_python_across_centuries_and_leap_days(engine):
    days = [D("1970-01-01"), D("1969-12-31"), D("1900-03-01"), D("2000-02-29"), D("2000-03-01"),
            D("2100-03-01"), D("2026-11-01")]
    days += [D("1901-01-01") + timedelta(days=n) for n in range(0, 73_000, 97)]
    frame = to_engine(engine, pl.LazyFrame({"d": days}))
    got = frame.select(_epoch_day("d").alias("n")).collect(backend="polars").to_native()["n"].to_list()
    assert got == [(d - D("1970-01-01")).days for d in days]


# ---------------------------------------------------------------------------------------- customer_360
def test_customer_360(make):
    fact_orders = make("gold.fact_orders", [
        fact("f1", "c1", "2026-11-01", 100.0),
        fact("f2", "c1", "2026-11-05", 50.5),
        fact("f3", "c1", "2026-11-07", 999.0, cancelled=True),  # later but cancelled: not in revenue or dates
        fact("f4", "c4", "2026-11-03", 20.0, cancelled=True),
    ])
    customers = make("silver.customers", [
        {"customer_id": "c1", "country": "DE"}, {"customer_id": "c2"}, {"customer_id": "c3", "country": "FR"},
        {"customer_id": "c4", "country": "US"},
    ])
    links = make("silver.customer_crm_links", [
        {"customer_id": "c1", "contact_id": "k1", "account_id": "a1"},
        {"customer_id": "c3", "contact_id": "k3", "account_id": None},
        {"customer_id": "c4", "contact_id": "k4", "account_id": "a2"},
    ])
    accounts = make("silver.accounts", [
        {"account_id": "a1", "account_name": "Acme", "owner_name": "Olivia"},
        {"account_id": "a2", "account_name": "Beta", "owner_name": None},
        {"account_id": "a3", "account_name": "Gamma", "owner_name": "Sam"},
    ])

    def opp(opportunity_id, account_id, stage, amount_usd):
        return {"opportunity_id": opportunity_id, "account_id": account_id, "stage": stage,
                "is_open": stage in OPEN_DEAL_STAGES, "amount_usd": amount_usd}

    opportunities = make("silver.opportunities", [
        opp("d1", "a1", "prospecting", 100.0), opp("d2", "a1", "negotiation", 50.25),
        opp("d3", "a1", "closed_won", 1000.0), opp("d4", "a1", "closed_lost", 500.0),
        opp("d5", "a2", "closed_won", 70.0), opp("d6", "a3", "proposal", 999.0),
    ])

    def day(customer_id, activity_date, sessions, page_views, add_to_cart, time_on_site_s):
        return {"customer_id": customer_id, "activity_date": D(activity_date), "sessions": sessions,
                "page_views": page_views, "add_to_cart": add_to_cart, "time_on_site_s": time_on_site_s}

    behaviour = make("silver.customer_behaviour", [
        day("c1", "2026-11-01", 2, 10, 1, 300), day("c1", "2026-11-04", 1, 3, 0, 60),
        day("c4", "2026-11-02", 1, 1, 0, 5), day("c9", "2026-11-02", 9, 9, 9, 9),
    ])
    got = collect(
        build_customer_360(fact_orders, customers, links, accounts, opportunities, behaviour), "gold.customer_360"
    )
    cols = table("gold.customer_360").columns
    assert got == [dict(zip(cols, r, strict=True)) for r in [
        ("c1", "DE", 150.5, 2, 1, D("2026-11-01"), D("2026-11-05"), "a1", "Acme", "Olivia", 150.25,
         3, 13, 1, 360, 2, D("2026-11-04")),
        # no orders, no CRM link, no behaviour
        ("c2", None, 0.0, 0, 0, None, None, None, None, None, 0.0, 0, 0, 0, 0, 0, None),
        # linked contact without a company
        ("c3", "FR", 0.0, 0, 0, None, None, None, None, None, 0.0, 0, 0, 0, 0, 0, None),
        # only a cancelled order; company with closed deals only
        ("c4", "US", 0.0, 0, 1, None, None, "a2", "Beta", None, 0.0, 1, 1, 0, 5, 1, D("2026-11-02")),
    ]]


# --------------------------------------------------------------------------------- product_performance
def test_product_performance(make):
    fact_orders = make("gold.fact_orders", [
        fact("f1", "c1", "2026-11-01", 20.0, quantity=2),
        fact("f2", "c1", "2026-11-01", 10.0, quantity=1),
        fact("f3", "c2", "2026-11-01", 50.0, quantity=5, cancelled=True),
        fact("f4", "c3", "2026-11-01", 5.0, quantity=1, cancelled=True, product_id="p2"),
        fact("f5", "c4", "2026-11-01", 8.0, quantity=2, cancelled=True, product_id="p2"),
        fact("f6", "c1", "2026-11-02", 40.0, quantity=4),
    ])
    cols = table("gold.product_performance").columns
    assert collect(build_product_performance(fact_orders), "gold.product_performance") == [
        dict(zip(cols, r, strict=True)) for r in [
            (D("2026-11-01"), "p1", 3, 3, 30.0, 2, 1, 1 / 3),  # cancelled order: counted, not in units/revenue
            (D("2026-11-01"), "p2", 2, 0, 0.0, 2, 2, 1.0),
            (D("2026-11-02"), "p1", 1, 4, 40.0, 1, 0, 0.0),
        ]
    ]


# ----------------------------------------------------------------------------------- customer_segments
def _segments(make, rows) -> dict[str, dict[str, Any]]:
    fact_orders = make("gold.fact_orders", rows)
    customers = make("silver.customers", [{"customer_id": c} for c in sorted({r["customer_id"] for r in rows})])
    c360 = build_customer_360(fact_orders, customers, *(make(n, []) for n in (
        "silver.customer_crm_links", "silver.accounts", "silver.opportunities", "silver.customer_behaviour")))
    got = collect(build_customer_segments(c360, fact_orders), "gold.customer_segments")
    return {r.pop("customer_id"): r for r in got}


def test_rfm_thresholds_are_the_declared_ones():
    assert {k: (b.measure, b.op, b.cutoffs) for k, b in RFM_THRESHOLDS.items()} == {
        "r_score": ("recency_days", "<=", (7, 14, 30, 60)),
        "f_score": ("frequency", ">=", (5, 4, 3, 2)),
        "m_score": ("monetary_usd", ">=", (1000, 500, 250, 100)),
    }
    assert [r.segment for r in SEGMENT_RULES] == [
        "Champions", "Loyal", "New", "Promising", "At Risk", "Hibernating", "Needs Attention"]
    assert (SEGMENT_RULES[-1].r, SEGMENT_RULES[-1].f) == ((1, 5), (1, 5))  # the catch-all comes last


def test_recency_score_at_each_boundary(make):
    as_of = D("2026-12-31")
    ages = {6: 5, 7: 5, 8: 4, 14: 4, 15: 3, 30: 3, 31: 2, 60: 2, 61: 1, 365: 1}
    rows = [fact(f"o{n}", f"r{n}", str(as_of - timedelta(days=n)), 10.0) for n in ages]
    rows.append(fact("anchor", "anchor", str(as_of), 10.0))
    got = _segments(make, rows)
    assert {c: (r["recency_days"], r["r_score"]) for c, r in got.items() if c != "anchor"} == {
        f"r{n}": (n, score) for n, score in ages.items()
    }
    assert got["anchor"]["recency_days"] == 0 and got["anchor"]["r_score"] == 5


def test_frequency_score_at_each_boundary(make):
    rows = []
    for n in range(1, 7):
        rows += [fact(f"f{n}-{i}", f"f{n}", "2026-11-01", 1.0) for i in range(n)]
        rows.append(fact(f"f{n}-x", f"f{n}", "2026-11-01", 1.0, cancelled=True))  # never counted
    got = _segments(make, rows)
    assert {c: (r["frequency"], r["f_score"]) for c, r in got.items()} == {
        "f1": (1, 1), "f2": (2, 2), "f3": (3, 3), "f4": (4, 4), "f5": (5, 5), "f6": (6, 5),
    }


def test_monetary_score_at_each_boundary(make):
    amounts = {99.99: 1, 100.0: 2, 249.99: 2, 250.0: 3, 499.99: 3, 500.0: 4, 999.99: 4, 1000.0: 5, 1000.01: 5}
    rows = [fact(f"o{a}", f"m{a}", "2026-11-01", a) for a in amounts]
    rows.append(fact("big-cancelled", "m99.99", "2026-11-01", 5000.0, cancelled=True))
    got = _segments(make, rows)
    assert {c: (r["monetary_usd"], r["m_score"]) for c, r in got.items()} == {
        f"m{a}": (a, score) for a, score in amounts.items()
    }


def test_segment_precedence(make):
    as_of = D("2026-12-31")
    # customer: (days since last order, kept orders, expected (r, f) and segment)
    cases = {
        "champion": (0, 5, "55", "Champions"),
        "champion_edge": (14, 4, "44", "Champions"),
        "loyal": (20, 4, "34", "Loyal"),
        "loyal_not_at_risk": (90, 5, "15", "Loyal"),  # Loyal is checked before At Risk
        "new": (3, 1, "51", "New"),
        "promising": (10, 2, "42", "Promising"),
        "promising_f3": (10, 3, "43", "Promising"),
        "at_risk": (45, 3, "23", "At Risk"),
        "hibernating": (45, 2, "22", "Hibernating"),
        "hibernating_r1": (90, 1, "11", "Hibernating"),
        "needs_attention": (20, 3, "33", "Needs Attention"),
        "needs_attention_f1": (20, 1, "31", "Needs Attention"),
    }
    rows = [
        fact(f"{c}-{i}", c, str(as_of - timedelta(days=age)), 10.0)
        for c, (age, n, _, _) in cases.items() for i in range(n)
    ]
    got = _segments(make, rows)
    assert {c: (r["rfm_score"], r["segment"]) for c, r in got.items()} == {
        c: (f"{rf}1", segment) for c, (_, _, rf, segment) in cases.items()
    }


def test_segments_full_rows_and_data_driven_as_of_date(make):
    got = _segments(make, [
        fact("o1", "x", "2026-11-10", 600.0),
        fact("o2", "x", "2026-11-02", 500.0),
        fact("o3", "x", "2026-11-18", 80.0, cancelled=True),  # later, cancelled: not the last order
        fact("o4", "y", "2026-11-20", 90.0, cancelled=True),  # only cancelled: no row, but sets as_of_date
        fact("o5", "z", "2026-09-01", 120.0),
    ])
    assert got == {
        "x": {"as_of_date": D("2026-11-20"), "recency_days": 10, "frequency": 2, "monetary_usd": 1100.0,
              "r_score": 4, "f_score": 2, "m_score": 5, "rfm_score": "425", "segment": "Promising"},
        "z": {"as_of_date": D("2026-11-20"), "recency_days": 80, "frequency": 1, "monetary_usd": 120.0,
              "r_score": 1, "f_score": 1, "m_score": 2, "rfm_score": "112", "segment": "Hibernating"},
    }


# ------------------------------------------------------------------------------------ schemas and docs
BUILDERS: dict[str, Callable[[Callable[..., nw.LazyFrame]], nw.LazyFrame]] = {
    "gold.fact_orders": lambda m: build_fact_orders(m("silver.orders"), m("silver.order_events"),
                                                    m("gold.dim_customer")),
    "gold.dim_customer": lambda m: build_dim_customer(m("silver.customer_versions"), m("silver.customer_crm_links")),
    "gold.dim_product": lambda m: build_dim_product(m("silver.products")),
    "gold.customer_360": lambda m: build_customer_360(
        m("gold.fact_orders"), m("silver.customers"), m("silver.customer_crm_links"), m("silver.accounts"),
        m("silver.opportunities"), m("silver.customer_behaviour")),
    "gold.product_performance": lambda m: build_product_performance(m("gold.fact_orders")),
    "gold.customer_segments": lambda m: build_customer_segments(m("gold.customer_360"), m("gold.fact_orders")),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_schema_is_the_catalogs_even_when_empty(make, name):
    assert collect(BUILDERS[name](make), name) == []


def test_dim_date_schema_is_the_catalogs_even_when_empty(engine):
    dates = to_engine(engine, pl.LazyFrame({"date": []}, schema={"date": pl.Date}))
    assert collect(build_dim_date(dates), "gold.dim_date") == []


def test_every_gold_table_has_a_builder_under_test():
    assert set(BUILDERS) | {"gold.dim_date"} == {t.name for t in tables("gold")}


def test_column_docs_cover_every_gold_column_exactly():
    assert {name: list(cols) for name, cols in GOLD_COLUMN_DOCS.items()} == {
        t.name: t.columns for t in tables("gold")
    }
    assert all(text.strip() for cols in GOLD_COLUMN_DOCS.values() for text in cols.values())
