"""Gold tasks: the plan of which order dates changed, and each gold table built from its declared inputs
(partitions by order date rebuilt for the planned dates, ``gold.dim_customer`` per changed customer)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import narwhals as nw
import pyarrow as pa

from lakehouse.backends import Engine
from lakehouse.backends.arrow_rows import arrow_table
from lakehouse.contracts.catalog import TableSpec, table, tables
from lakehouse.tasks import customer_grain
from lakehouse.tasks.context import RunContext, logger, summary_of
from lakehouse.tasks.retry_policy import LAKE_RETRIES
from lakehouse.tasks.tracking import lake_task
from lakehouse.tasks.transforms import bronze, gold


class Inputs:
    """A gold table's declared inputs (``TableSpec.inputs``) as lazy frames, for the function that builds it:
    reading a table the declaration does not name is an error, so the declaration stays the whole truth."""

    def __init__(self, spec: TableSpec, scan: Callable[[str], nw.LazyFrame], engine: Engine | None = None, *,
                 whole: bool = False):
        self.spec, self._scan, self._engine = spec, scan, engine
        self.whole = whole  # the table is built whole: its inputs are every row, not some order dates' rows

    def __call__(self, name: str) -> nw.LazyFrame:
        if name not in self.spec.inputs:
            msg = (f"expected {self.spec.name}'s builder to read one of its declared inputs "
                   f"{list(self.spec.inputs)}, got {name!r}; declare it in contracts/catalog.py")
            raise KeyError(msg)
        return self._scan(name)

    def row(self, frame: nw.LazyFrame) -> dict[str, Any]:
        """The first row ``frame`` computes (an aggregate's one row)."""
        assert self._engine is not None
        return self._engine.to_arrow(frame).to_pylist()[0]

    def frame(self, data: pa.Table) -> nw.LazyFrame:
        assert self._engine is not None
        return self._engine.from_arrow(data)


BUILDERS: dict[str, Callable[[Inputs], nw.LazyFrame]] = {}


def builds(name: str) -> Callable[[Callable[[Inputs], nw.LazyFrame]], Callable[[Inputs], nw.LazyFrame]]:
    """Register the function that builds gold table ``name`` from its declared inputs."""
    def register(fn: Callable[[Inputs], nw.LazyFrame]) -> Callable[[Inputs], nw.LazyFrame]:
        BUILDERS[name] = fn
        return fn
    return register


@builds("gold.dim_customer")
def _dim_customer(read: Inputs) -> nw.LazyFrame:
    return gold.build_dim_customer(read("silver.customer_versions"), read("silver.customer_crm_links"))


@builds("gold.dim_product")
def _dim_product(read: Inputs) -> nw.LazyFrame:
    return gold.build_dim_product(read("silver.products"))


@builds("gold.fact_orders")
def _fact_orders(read: Inputs) -> nw.LazyFrame:
    orders = read("silver.orders")
    oldest = read.row(gold.oldest_change_day(orders))["day"]
    # Built whole, the orders are every silver order: their events and customers are not looked up by a join with
    # them, which would only drop rows the fact's own left joins leave out (Sail, the fact at scale 10 staged
    # alone, median of 5: 2.9 -> 2.4 s; Polars 1.86 -> 1.76 s).
    events = gold.events_that_can_count(read("silver.order_events"), None if read.whole else orders, oldest)
    customers = read("gold.dim_customer")
    if not read.whole:
        customers = customers.join(orders.select("customer_id").unique(), on="customer_id", how="semi")
    return gold.build_fact_orders(orders, events, customers)


@builds("gold.dim_date")
def _dim_date(read: Inputs) -> nw.LazyFrame:
    """Every day from the first to the last order date (empty when there are no orders)."""
    fact = read("gold.fact_orders")
    bounds = read.row(fact.select(nw.col("order_date").min().alias("lo"), nw.col("order_date").max().alias("hi")))
    lo, hi = bounds["lo"], bounds["hi"]
    days = [] if lo is None else [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]
    return gold.build_dim_date(read.frame(arrow_table([{"date": d} for d in days], pa.schema([("date", pa.date32())]))))


@builds("gold.customer_360")
def _customer_360(read: Inputs) -> nw.LazyFrame:
    return gold.build_customer_360(read("gold.fact_orders"), read("silver.customers"),
                                   read("silver.customer_crm_links"), read("silver.accounts"),
                                   read("silver.opportunities"), read("silver.customer_behaviour"))


@builds("gold.product_performance")
def _product_performance(read: Inputs) -> nw.LazyFrame:
    return gold.build_product_performance(read("gold.fact_orders"))


@builds("gold.customer_segments")
def _customer_segments(read: Inputs) -> nw.LazyFrame:
    return gold.build_customer_segments(read("gold.customer_360"), read("gold.fact_orders"))


def plan_inputs() -> tuple[str, ...]:
    """What the plan reads: the silver tables the fact table is built from whose rows carry an order date or
    a customer version, and the bronze tables whose run-date batch says which of their rows are new. Not
    gold.fact_orders: the plan's own stage rewrites it, and a retry must find the plan it made."""
    silver = ("silver.orders", "silver.order_events", "silver.customer_versions")
    fed_by = [table(n).source or next(t.source for t in tables("silver") if t.history == n) for n in silver]
    return (*silver, *(n for n in fed_by if n))


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


@lake_task(lambda p: plan_inputs(), name="gold-plan")
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


@lake_task(lambda p: table(p["table_name"]).inputs, name="gold", task_run_name="gold-{table_name}", **LAKE_RETRIES)
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
    frame = BUILDERS[spec.name](Inputs(spec, s, engine, whole=not partial))
    written = engine.overwrite_partitions(spec, frame) if partial else engine.overwrite(spec, frame)
    return summary_of("gold", spec, rows_written=written.rows, version=written.version,
                    order_dates=len(order_dates) if partial and order_dates else None)


def dim_customer_of(scan: Callable[[str], nw.LazyFrame]) -> nw.LazyFrame:
    """``gold.dim_customer`` built from the inputs ``scan`` gives (all customers, or some)."""
    return BUILDERS["gold.dim_customer"](Inputs(table("gold.dim_customer"), scan))


def _build_dim_customer(ctx: RunContext, engine: Engine, spec: TableSpec, scan: Callable[[str], nw.LazyFrame], *,
                        whole: bool) -> dict[str, Any]:
    """Build ``gold.dim_customer`` (tasks/customer_grain.py): again only for the customers whose inputs changed
    since its recorded build, else (``whole``, or no build to continue) whole. Records the build."""
    lake = ctx.lake()
    inputs_now = {name: engine.version(table(name)) for name in spec.inputs}
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
