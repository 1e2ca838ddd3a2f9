"""Gold tasks: the plan of which order dates changed, and each gold table built from its declared inputs
(partitions by order date rebuilt for the planned dates, ``gold.dim_customer`` per changed customer)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import narwhals as nw
import pyarrow as pa

from backends import Engine
from contracts.catalog import TableSpec, table
from tasks import customer_grain
from tasks.context import RunContext, logger, summary_of
from tasks.retry_policy import LAKE_RETRIES
from tasks.tracking import lake_task
from tasks.transforms import bronze, gold

# What each gold table is built from (also what its task's cache key is made of).
GOLD_INPUTS: dict[str, tuple[str, ...]] = {
    "gold.dim_customer": ("silver.customer_versions", "silver.customer_crm_links"),
    "gold.dim_product": ("silver.products",),
    "gold.fact_orders": ("silver.orders", "silver.order_events", "gold.dim_customer"),
    "gold.dim_date": ("gold.fact_orders",),
    "gold.customer_360": ("gold.fact_orders", "silver.customers", "silver.customer_crm_links", "silver.accounts",
                          "silver.opportunities", "silver.customer_behaviour"),
    "gold.product_performance": ("gold.fact_orders",),
    "gold.customer_segments": ("gold.customer_360", "gold.fact_orders"),
}


# Not gold.fact_orders: the plan's own stage rewrites it, and a retry must find the plan it made.
PLAN_INPUTS = ("silver.orders", "silver.order_events", "silver.customer_versions", "bronze.snowflake.orders",
               "bronze.kafka.order_events", "bronze.snowflake.customers")


def affected_order_dates(engine: Engine, *, orders_batch: nw.LazyFrame, events_batch: nw.LazyFrame,
                         customers_batch: nw.LazyFrame, events_since: date | None = None) -> list[date]:
    """The order dates whose gold partitions the batches' rows of silver orders, order events and customer
    versions change (tasks/gold.py ``changed_order_dates``: batches of ``_source_file`` or of
    ``_record_hash``), sorted. ``events_since``: no event of the batch is older (event partitions before it
    are not read)."""
    def s(name: str) -> nw.LazyFrame:
        return engine.scan(table(name))

    # The orders' few columns the plan joins on, read once (three joins use them).
    orders = engine.materialize(s("silver.orders").select("order_id", "customer_id", "order_ts", "order_date",
                                                         *orders_batch.columns))
    events = s("silver.order_events")
    if events_since is not None:
        events = events.filter(nw.col("event_date") >= nw.lit(events_since).cast(nw.Date()))
    changed = gold.changed_order_dates(orders, events, s("silver.customer_versions"), orders_batch=orders_batch,
                                       events_batch=events_batch, customers_batch=customers_batch)
    return sorted(d for d in engine.to_arrow(changed).column("order_date").to_pylist() if d is not None)


@lake_task(lambda p: PLAN_INPUTS, name="gold-plan")
def plan_gold(ctx: RunContext) -> list[date] | None:
    """The order dates whose gold partitions the run date's batches changed; None when gold must be built
    whole (no fact table yet)."""
    engine = ctx.engine()
    if not engine.exists(table("gold.fact_orders")):
        return None

    # The run date's bronze files: the silver rows that came from them are the ones the batches wrote (a file
    # column reads far less than the rows' hashes).
    def batch(name: str) -> nw.LazyFrame:
        return bronze.batch_for(engine.scan(table(name)), ctx.run_date).select("_source_file")

    # Events the batch accepted lie within the lookback (late.beyond_lookback), so older event partitions are
    # not read.
    dates = affected_order_dates(
        engine, orders_batch=batch("bronze.snowflake.orders"), events_batch=batch("bronze.kafka.order_events"),
        customers_batch=batch("bronze.snowflake.customers"),
        events_since=ctx.run_date - timedelta(days=ctx.settings().lookback_days))
    logger().info("gold for %s: %d order date(s) changed%s", ctx.run_date, len(dates),
                   f" ({dates[0]} .. {dates[-1]})" if dates else "")
    return dates


@lake_task(lambda p: GOLD_INPUTS[p["table_name"]], name="gold", task_run_name="gold-{table_name}", **LAKE_RETRIES)
def build_gold(ctx: RunContext, table_name: str, order_dates: list[date] | None = None) -> dict[str, Any]:
    """Build one gold table from silver (marts also from gold.fact_orders). Tables partitioned by order date
    are rebuilt only for ``order_dates`` (None: whole); the others are small and rebuilt whole."""
    spec = table(table_name)
    engine = ctx.engine()
    partial = order_dates is not None and spec.partition_by == ("order_date",) and engine.exists(spec)

    def s(name: str) -> nw.LazyFrame:
        frame = engine.scan(table(name))
        if partial and name in ("silver.orders", "gold.fact_orders"):
            frame = frame.filter(nw.col("order_date").is_in(order_dates))
        return frame

    if partial and not order_dates:
        return summary_of("gold", spec, rows_written=0, version=engine.version(spec), order_dates=0)
    if spec.name in customer_grain.TABLES:
        return _build_dim_customer(ctx, engine, spec, s, whole=order_dates is None)
    orders = s("silver.orders")
    builders: dict[str, Callable[[], nw.LazyFrame]] = {
        "gold.fact_orders": lambda: gold.build_fact_orders(
            orders, gold.events_that_can_count(s("silver.order_events"), orders, engine.to_arrow(
                gold.oldest_change_day(orders)).column("day")[0].as_py()),
            s("gold.dim_customer").join(orders.select("customer_id").unique(), on="customer_id", how="semi")),
        "gold.dim_product": lambda: gold.build_dim_product(s("silver.products")),
        "gold.dim_date": lambda: gold.build_dim_date(_calendar(engine, s("gold.fact_orders"))),
        "gold.customer_360": lambda: gold.build_customer_360(
            s("gold.fact_orders"), s("silver.customers"), s("silver.customer_crm_links"), s("silver.accounts"),
            s("silver.opportunities"), s("silver.customer_behaviour")),
        "gold.product_performance": lambda: gold.build_product_performance(s("gold.fact_orders")),
        "gold.customer_segments": lambda: gold.build_customer_segments(s("gold.customer_360"), s("gold.fact_orders")),
    }
    frame = builders[spec.name]()
    written = engine.overwrite_partitions(spec, frame) if partial else engine.overwrite(spec, frame)
    return summary_of("gold", spec, rows_written=written.rows, version=written.version,
                    order_dates=len(order_dates) if partial and order_dates else None)


def dim_customer_of(scan: Callable[[str], nw.LazyFrame]) -> nw.LazyFrame:
    """``gold.dim_customer`` built from the inputs ``scan`` gives (all customers, or some)."""
    return gold.build_dim_customer(scan("silver.customer_versions"), scan("silver.customer_crm_links"))


def _build_dim_customer(ctx: RunContext, engine: Engine, spec: TableSpec, scan: Callable[[str], nw.LazyFrame], *,
                        whole: bool) -> dict[str, Any]:
    """Build ``gold.dim_customer`` (flows/customer_grain.py): again only for the customers whose inputs changed
    since its recorded build, else (``whole``, or no build to continue) whole. Records the build."""
    lake = ctx.settings().lake()
    inputs_now = {name: engine.version(table(name)) for name in GOLD_INPUTS[spec.name]}
    current = engine.version(spec)
    since, why = (None, "a whole build was asked for") if whole else customer_grain.recorded_inputs(
        lake, spec, current, inputs_now)
    if since is None:
        if not whole:
            logger().info("%s: built whole, because %s", spec.name, why)
        written = engine.overwrite(spec, dim_customer_of(scan))
        version, rows, customers = written.version, written.rows, None
    else:
        changed = engine.materialize(customer_grain.affected_customers(engine, spec, since))
        customers = engine.count(changed)
        if customers:
            fresh = dim_customer_of(customer_grain.for_customers(scan, changed))
            written = engine.overwrite(spec, customer_grain.rebuilt(engine.scan(spec), changed, fresh))
            version, rows = written.version, written.rows
        else:  # nothing it is built from changed: the table stays as it is
            version, rows = current, 0
        logger().info("%s: %d customer(s) built again, the others kept", spec.name, customers)
    # A missing input is left out of the record, so the next build is whole (recorded_inputs).
    customer_grain.record(lake, spec, version, {k: v for k, v in inputs_now.items() if v is not None}, ctx.run_id)
    return summary_of("gold", spec, rows_written=rows, version=version, order_dates=None, customers_rebuilt=customers)


# Dimensions before the fact (it looks up the customer version), the fact before the marts.
GOLD_ORDER = ("gold.dim_customer", "gold.dim_product", "gold.fact_orders", "gold.dim_date", "gold.customer_360",
              "gold.product_performance", "gold.customer_segments")


def _calendar(engine: Engine, fact: nw.LazyFrame) -> nw.LazyFrame:
    """Every day from the first to the last order date (empty when there are no orders)."""
    bounds = engine.to_arrow(fact.select(nw.col("order_date").min().alias("lo"), nw.col("order_date").max().alias("hi")))
    lo, hi = bounds.column("lo")[0].as_py(), bounds.column("hi")[0].as_py()
    days = [] if lo is None else [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]
    return engine.from_arrow(pa.table({"date": pa.array(days, pa.date32())}))
