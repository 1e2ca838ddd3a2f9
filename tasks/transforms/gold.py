"""Gold: the star schema (``fact_orders``, ``dim_*``) and the marts built on it, as Narwhals lazy transforms.

Every builder is frame-in, frame-out (no paths, settings, clocks or I/O) and ends with ``to_schema`` so its
output is exactly the catalog's gold table. Only operations Narwhals implements on both Polars and PySpark
lazy frames are used: no ``join_asof``, no ``dt.total_*``/``dt.timestamp``, no ``str.replace``. Date
arithmetic goes through ``_epoch_day`` (integer day numbers from year and day-of-year) and weekdays through
``_iso_weekday`` (Spark's Sunday = 0 normalised to 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import narwhals as nw

from lakehouse.backends.expressions import with_record_hash
from lakehouse.contracts.catalog import table
from lakehouse.contracts.expressions import first_match, ratio
from lakehouse.tasks.transforms.schema import to_schema

__all__ = [
    "RFM_THRESHOLDS",
    "SEGMENT_RULES",
    "RfmBand",
    "SegmentRule",
    "build_customer_360",
    "build_customer_segments",
    "build_dim_customer",
    "build_dim_date",
    "build_dim_product",
    "build_fact_orders",
    "build_product_performance",
    "changed_order_dates",
]


# ------------------------------------------------------------------------------------------ RFM tables
@dataclass(frozen=True)
class RfmBand:
    """Fixed cut-offs that turn one RFM measure into a score of 5, 4, 3, 2 (in that order), else 1.

    ``op`` says how the measure meets a cut-off: ``"<="`` for recency (smaller is better), ``">="`` for
    frequency and monetary value (larger is better). Boundaries are inclusive.
    """

    measure: str
    op: Literal["<=", ">="]
    cutoffs: tuple[float, float, float, float]  # the cut-offs for scores 5, 4, 3, 2


# Fixed, declared thresholds rather than quantiles: a score then means the same thing on every run, engine
# and data size, and each boundary can be tested exactly.
RFM_THRESHOLDS: dict[str, RfmBand] = {
    "r_score": RfmBand("recency_days", "<=", (7, 14, 30, 60)),  # days since the last kept order
    "f_score": RfmBand("frequency", ">=", (5, 4, 3, 2)),  # kept orders
    "m_score": RfmBand("monetary_usd", ">=", (1000, 500, 250, 100)),  # USD revenue of kept orders
}


@dataclass(frozen=True)
class SegmentRule:
    """A segment and the inclusive r_score / f_score ranges a customer must fall in to get it."""

    segment: str
    r: tuple[int, int] = (1, 5)
    f: tuple[int, int] = (1, 5)


# Checked top to bottom; the first rule a customer matches wins. The last rule matches everyone.
SEGMENT_RULES: tuple[SegmentRule, ...] = (
    SegmentRule("Champions", r=(4, 5), f=(4, 5)),  # bought recently and often
    SegmentRule("Loyal", f=(4, 5)),  # buys often, not lately
    SegmentRule("New", r=(4, 5), f=(1, 1)),  # first kept order was recent
    SegmentRule("Promising", r=(4, 5)),  # recent, a few orders
    SegmentRule("At Risk", r=(1, 2), f=(3, 5)),  # used to buy regularly, gone quiet
    SegmentRule("Hibernating", r=(1, 2)),  # few orders, long ago
    SegmentRule("Needs Attention"),  # everyone else (mid recency)
)


# ------------------------------------------------------------------------------------- building blocks
def _int(expr: nw.Expr) -> nw.Expr:
    return expr.cast(nw.Int64)


def _date_key(col: str) -> nw.Expr:
    d = nw.col(col).dt
    return _int(d.year()) * 10_000 + _int(d.month()) * 100 + _int(d.day())


def _epoch_day(col: str) -> nw.Expr:
    """Days since 1970-01-01 of a Date column.

    Built from ``dt.year`` and ``dt.ordinal_day`` with integer arithmetic only, because Narwhals 2.29 has
    no portable date difference: ``dt.total_*`` is not implemented on PySpark, and ``cast(Int64)`` of a
    Date gives epoch days on Polars but is an error (ANSI) or null on Spark. ``//`` is floor division on
    both engines. Verify on Spark when its engine is added to the tests.
    """
    year = _int(nw.col(col).dt.year())
    prev = year - 1
    leap_days_before = prev // 4 - prev // 100 + prev // 400  # leap years in 1..year-1
    # 477 = leap years in 1..1969, so 1970-01-01 is day 0.
    return _int(365 * (year - 1970) + leap_days_before - 477 + _int(nw.col(col).dt.ordinal_day()) - 1)


def _iso_weekday(col: str) -> nw.Expr:
    return _iso_from_weekday(nw.col(col).dt.weekday())


def _iso_from_weekday(weekday: nw.Expr) -> nw.Expr:
    # dt.weekday() is Monday=1..Sunday=7 on Polars but Sunday=0 on PySpark; (w + 6) % 7 + 1 maps both
    # 0 and 7 to 7 and leaves 1..6 alone, with non-negative operands (no negative-modulo semantics).
    return (_int(weekday) + 6) % 7 + 1


def _kept() -> nw.Expr:
    return ~nw.col("is_cancelled")


# Order measures, each an elementary aggregation over helper flags added by `_order_summary` (elementary so
# any Narwhals backend can run it natively), so every mart shares one definition of "kept revenue", ...
_ORDER_FLAGS = {
    "_kept_n": _int(_kept()),
    "_cancelled_n": _int(nw.col("is_cancelled")),
    "_kept_usd": nw.when(_kept()).then(nw.col("amount_usd")).otherwise(nw.lit(0.0)),
    "_kept_units": nw.when(_kept()).then(nw.col("quantity")).otherwise(nw.lit(0)),
    "_kept_date": nw.when(_kept()).then(nw.col("order_date")),  # null for cancelled orders
}
_ORDER_MEASURES = {
    "orders": nw.len(),
    "kept_orders": nw.col("_kept_n").sum(),
    "cancelled_orders": nw.col("_cancelled_n").sum(),
    # Money totals are rounded to cents: float sums depend on row order, which differs between rewrites of
    # the same data, and a rerun must reproduce the table exactly.
    "kept_revenue_usd": nw.col("_kept_usd").sum().round(2),
    "kept_units": nw.col("_kept_units").sum(),
    "first_kept_date": nw.col("_kept_date").min(),
    "last_kept_date": nw.col("_kept_date").max(),
    "distinct_customers": nw.col("customer_id").n_unique(),
}
_COUNT_MEASURES = frozenset({"orders", "kept_orders", "cancelled_orders", "kept_units", "distinct_customers"})


def _order_summary(fact_orders: nw.LazyFrame, by: list[str], **outputs: str) -> nw.LazyFrame:
    """``fact_orders`` aggregated per ``by``; ``outputs`` maps an output column to a ``_ORDER_MEASURES`` name."""
    flags = fact_orders.with_columns(**_ORDER_FLAGS)
    summary = flags.group_by(by).agg(_ORDER_MEASURES[m].alias(name) for name, m in outputs.items())
    # Counts as Int64 on every engine (Polars' len() and n_unique() are UInt32).
    return summary.with_columns(_int(nw.col(n)) for n, m in outputs.items() if m in _COUNT_MEASURES)


def _latest(frame: nw.LazyFrame, key: str, *order_by: str) -> nw.LazyFrame:
    """The row per ``key`` with the largest ``order_by`` values (compared in turn, so later ones break ties), for
    columns a contract requires and whose last column is unique, so one row per key. One window over the frame
    as the caller narrowed it: Spark shuffles and sorts the rows a window reads, cheap on a few columns (the
    1.28M order events' latest per order on Sail at scale 10: 3.2 s as two aggregations joined back, each
    reading the events again, 2.2 s so; Polars 1.4 -> 1.0 s)."""
    return frame.filter(nw.col(key).is_last_distinct().over(order_by=list(order_by)))


def _zero_if_null(**defaults: float) -> list[nw.Expr]:
    """``fill_null`` per column; an integer default also casts to Int64 (counts after a left join)."""
    return [
        (_int(nw.col(c)) if isinstance(v, int) else nw.col(c)).fill_null(v) for c, v in defaults.items()
    ]


_BEHAVIOUR_SUMS = ("sessions", "page_views", "add_to_cart", "time_on_site_s")


# ------------------------------------------------------------------------------------------ star schema
def build_fact_orders(orders: nw.LazyFrame, order_events: nw.LazyFrame, dim_customer: nw.LazyFrame) -> nw.LazyFrame:
    """One row per silver order with its latest status, USD amount and the customer version it was placed under.

    The latest Kafka event of an order (by ``event_ts``, ties broken by the larger ``event_id``) overrides
    the extract's status only when it is strictly newer than the order's ``updated_at``. ``customer_sk`` is
    the ``dim_customer`` version valid at ``order_ts`` (``valid_from <= order_ts < valid_to``); an order
    placed before a customer's first recorded version gets that first version. ``orders`` may be a subset
    (some order dates): only their events and customers are looked up.
    """
    events = order_events.select("order_id", "event_ts", "event_id", "status")
    latest = _latest(events, "order_id", "event_ts", "event_id").select(
        "order_id", nw.col("event_ts").alias("_event_ts"), nw.col("status").alias("_event_status")
    )
    newer = nw.col("_event_ts") > nw.col("updated_at")  # null (no event) counts as not newer
    status = nw.when(newer).then(nw.col("_event_status")).otherwise(nw.col("status"))
    frame = orders.join(latest, on="order_id", how="left").with_columns(
        status=status,
        updated_at=nw.when(newer).then(nw.col("_event_ts")).otherwise(nw.col("updated_at")),
        date_key=_date_key("order_date"),
    )
    return to_schema(_with_customer_version(frame.with_columns(is_cancelled=nw.col("status") == "cancelled"),
                                            dim_customer), table("gold.fact_orders"))


def oldest_change_day(orders: nw.LazyFrame) -> nw.LazyFrame:
    """One row, one column ``day``: the (UTC) day of the oldest ``updated_at`` of ``orders`` (null if none)."""
    return orders.select(nw.col("updated_at").min().dt.date().alias("day"))


def events_that_can_count(order_events: nw.LazyFrame, orders: nw.LazyFrame | None,
                          since: date | None) -> nw.LazyFrame:
    """The events of ``orders`` (None: of every order, no join) that ``build_fact_orders`` needs, event-date
    partitions before ``since`` (the orders' ``oldest_change_day``) not read. An event sets a status only when
    newer than its order's ``updated_at``, and an event of an earlier day is older than every order's
    ``updated_at`` and than every event kept, so leaving it out changes no fact row."""
    if since is not None:
        order_events = order_events.filter(nw.col("event_date") >= nw.lit(since).cast(nw.Date()))
    return order_events if orders is None else order_events.join(orders.select("order_id"), on="order_id", how="semi")


def _with_customer_version(orders: nw.LazyFrame, dim_customer: nw.LazyFrame) -> nw.LazyFrame:
    """Add ``customer_sk``: the version valid at ``order_ts`` (null only if the customer has no version at all:
    the order is kept, and the release audit's reference customer_id -> dim_customer refuses it)."""
    versions = dim_customer.select(
        "customer_id", "customer_sk", nw.col("valid_from").alias("_from"), nw.col("valid_to").alias("_to"),
        (nw.col("valid_from") == nw.col("valid_from").min().over("customer_id")).alias("_first"),
    )
    ts = nw.col("order_ts")
    within = (ts >= nw.col("_from")) & (nw.col("_to").is_null() | (ts < nw.col("_to")))
    before_first = nw.col("_first") & (ts < nw.col("_from"))
    joined = orders.join(versions, on="customer_id", how="left")
    return joined.filter(nw.col("customer_sk").is_null() | within | before_first)


def changed_order_dates(
    orders: nw.LazyFrame,
    order_events: nw.LazyFrame,
    customer_versions: nw.LazyFrame,
    *,
    orders_batch: nw.LazyFrame,
    events_batch: nw.LazyFrame,
    customers_batch: nw.LazyFrame,
) -> nw.LazyFrame:
    """``order_date`` of every silver order whose fact row a run's bronze batches may have changed: orders the
    batch wrote, orders one of its events belongs to, and orders placed on or after a new customer version's
    ``valid_from`` (all the customer's orders when the new version is the customer's first). One column
    ``order_date``, distinct.

    A ``*_batch`` frame names what the batch wrote by one column: ``_source_file`` (the bronze files of a run
    date: the silver rows that came from them) or ``_record_hash`` (rows, as a replay knows them)."""
    def written(frame: nw.LazyFrame, batch: nw.LazyFrame) -> nw.LazyFrame:
        if batch.columns not in (["_source_file"], ["_record_hash"]):
            msg = f"expected a batch of one column, _source_file or _record_hash, got columns {batch.columns}"
            raise ValueError(msg)
        return frame.join(batch.unique(), on=batch.columns[0], how="semi")

    own = written(orders, orders_batch).select("order_date")
    event_orders = written(order_events, events_batch).select("order_id").unique()
    evented = orders.join(event_orders, on="order_id", how="semi").select("order_date")
    since = written(customer_versions, customers_batch).group_by("customer_id").agg(
        nw.col("updated_at").min().alias("_since"))
    first = customer_versions.group_by("customer_id").agg(nw.col("updated_at").min().alias("_first"))
    since = since.join(first, on="customer_id", how="inner").select(
        "customer_id", nw.when(nw.col("_since") > nw.col("_first")).then(nw.col("_since")).alias("_since"))
    by_customer = orders.join(since, on="customer_id", how="inner").filter(
        nw.col("_since").is_null() | (nw.col("order_ts") >= nw.col("_since"))).select("order_date")
    return nw.concat([own, evented, by_customer], how="vertical").unique()


def build_dim_customer(versions: nw.LazyFrame, links: nw.LazyFrame) -> nw.LazyFrame:
    """SCD2: one row per customer version (``silver.customer_versions``), valid from its ``updated_at`` until the
    next version's (``valid_to`` null and ``is_current`` for the latest), whatever order the versions arrived
    in. ``customer_sk`` is a hash of customer id and ``valid_from``, so it is the same on every run and engine.
    ``crm_account_id`` is the customer's current CRM match on every version (type 1).
    """
    accounts = links.select("customer_id", nw.col("account_id").alias("crm_account_id"))
    frame = versions.with_columns(
        nw.col("updated_at").alias("valid_from"),
        nw.col("updated_at").shift(-1).over("customer_id", order_by="updated_at").alias("valid_to"),
        nw.col("updated_at").dt.to_string("%Y-%m-%dT%H:%M:%S").alias("_from_text"),
    ).with_columns(nw.col("valid_to").is_null().alias("is_current"))
    keyed = with_record_hash(frame, ["customer_id", "_from_text"], out="_sk_hash")
    keyed = keyed.with_columns(nw.col("_sk_hash").str.slice(0, 16).alias("customer_sk"))
    return to_schema(keyed.join(accounts, on="customer_id", how="left"), table("gold.dim_customer"))


def build_dim_product(products: nw.LazyFrame) -> nw.LazyFrame:
    """Current products."""
    return to_schema(products, table("gold.dim_product"))


def build_dim_date(dates: nw.LazyFrame) -> nw.LazyFrame:
    """Calendar attributes of every day in ``dates`` (one Date column ``date``; the caller makes it contiguous)."""
    d = nw.col("date").dt
    frame = dates.with_columns(
        date_key=_date_key("date"),
        year=_int(d.year()),
        quarter=(_int(d.month()) - 1) // 3 + 1,
        month=_int(d.month()),
        day=_int(d.day()),
        iso_weekday=_iso_weekday("date"),
    ).with_columns(is_weekend=nw.col("iso_weekday") >= 6)
    return to_schema(frame, table("gold.dim_date"))


# ---------------------------------------------------------------------------------------------- marts
def build_customer_360(
    fact_orders: nw.LazyFrame,
    customers: nw.LazyFrame,
    links: nw.LazyFrame,
    accounts: nw.LazyFrame,
    opportunities: nw.LazyFrame,
    behaviour: nw.LazyFrame,
) -> nw.LazyFrame:
    """One row per silver customer: kept-order revenue and counts, CRM account, open pipeline, behaviour.

    Customers without orders, CRM match or behaviour are kept, with 0 for sums and counts and null for
    dates and CRM fields.
    """
    orders = _order_summary(
        fact_orders, ["customer_id"],
        lifetime_revenue_usd="kept_revenue_usd", order_count="kept_orders",
        cancelled_order_count="cancelled_orders", first_order_date="first_kept_date",
        last_order_date="last_kept_date",
    )
    crm = links.select("customer_id", nw.col("account_id").alias("crm_account_id")).join(
        accounts.select(
            nw.col("account_id").alias("crm_account_id"),
            nw.col("account_name").alias("crm_account_name"),
            nw.col("owner_name").alias("crm_owner"),
        ),
        on="crm_account_id", how="left",
    )
    pipeline = (
        opportunities.filter(nw.col("is_open"))
        .group_by("account_id")
        .agg(nw.col("amount_usd").sum().round(2).alias("open_pipeline_usd"))
        .rename({"account_id": "crm_account_id"})
    )
    activity = behaviour.group_by("customer_id").agg(
        *(nw.col(c).sum() for c in _BEHAVIOUR_SUMS),
        # Rows, not distinct dates: silver.customer_behaviour has one row per (customer_id, activity_date)
        # (its contract's uniqueness), and a count costs half a distinct count.
        nw.len().alias("active_days"),
        nw.col("activity_date").max().alias("last_active_date"),
    )
    frame = (
        customers.select("customer_id", "country")
        .join(orders, on="customer_id", how="left")
        .join(crm, on="customer_id", how="left")
        .join(pipeline, on="crm_account_id", how="left")
        .join(activity, on="customer_id", how="left")
        .with_columns(
            _zero_if_null(
                lifetime_revenue_usd=0.0, order_count=0, cancelled_order_count=0, open_pipeline_usd=0.0,
                sessions=0, page_views=0, add_to_cart=0, time_on_site_s=0, active_days=0,
            )
        )
    )
    return to_schema(frame, table("gold.customer_360"))


def build_product_performance(fact_orders: nw.LazyFrame) -> nw.LazyFrame:
    """Per (order_date, product_id): all orders, kept units and USD revenue, customers, cancellations."""
    frame = _order_summary(
        fact_orders, ["order_date", "product_id"],
        orders="orders", units="kept_units", revenue_usd="kept_revenue_usd",
        distinct_customers="distinct_customers", cancelled_orders="cancelled_orders",
    ).with_columns(cancellation_rate=ratio(nw.col("cancelled_orders"), nw.col("orders")))
    return to_schema(frame, table("gold.product_performance"))


def _score(band: RfmBand) -> nw.Expr:
    measure = nw.col(band.measure)
    hits = [measure <= c if band.op == "<=" else measure >= c for c in band.cutoffs]
    return _int(first_match(zip(hits, (nw.lit(s) for s in (5, 4, 3, 2)), strict=True), nw.lit(1)))


def _segment() -> nw.Expr:
    def matches(rule: SegmentRule) -> nw.Expr:
        return nw.col("r_score").is_between(*rule.r) & nw.col("f_score").is_between(*rule.f)

    *rules, fallback = SEGMENT_RULES  # the last rule matches everyone: it is the `otherwise`
    return first_match(((matches(rule), nw.lit(rule.segment)) for rule in rules), nw.lit(fallback.segment))


def build_customer_segments(customer_360: nw.LazyFrame, fact_orders: nw.LazyFrame) -> nw.LazyFrame:
    """RFM scores and segment per customer with at least one kept (not cancelled) order.

    Frequency, monetary value and the latest kept order are ``customer_360``'s kept-order measures (one
    definition of each, and no second pass over the facts). Recency is measured from ``as_of_date``, the latest
    ``order_date`` in ``fact_orders`` (not the clock), so rerunning a past day gives the same result. Scores use
    ``RFM_THRESHOLDS``; segments ``SEGMENT_RULES``.
    """
    as_of = fact_orders.select(nw.col("order_date").max().alias("as_of_date"))
    frame = (
        customer_360.select(
            "customer_id", nw.col("order_count").alias("frequency"),
            nw.col("lifetime_revenue_usd").alias("monetary_usd"), nw.col("last_order_date").alias("_last"),
        )
        .filter(nw.col("frequency") >= 1)
        .join(as_of, how="cross")
        .with_columns(recency_days=_epoch_day("as_of_date") - _epoch_day("_last"))
        .with_columns(**{name: _score(band) for name, band in RFM_THRESHOLDS.items()})
        .with_columns(
            rfm_score=nw.concat_str(
                [nw.col(c).cast(nw.String) for c in ("r_score", "f_score", "m_score")], separator=""
            ),
            segment=_segment(),
        )
    )
    return to_schema(frame, table("gold.customer_segments"))
