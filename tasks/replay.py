"""The replay task: quarantined silver rows sent through the same conform step again after a fix (the flow
and what it does: flows/quarantine.py). Accepted rows' hashes go to the replay log, so no later replay feeds
them again; exact duplicates (``duplicate.exact``) are never replayed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import narwhals as nw
from prefect import task
from prefect.cache_policies import NO_CACHE

from lakehouse.backends import Engine
from lakehouse.backends.logs import replay_log
from lakehouse.contracts.catalog import quarantine_for, table
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.gold import affected_order_dates
from lakehouse.tasks.silver import conform_into_silver

NOT_REPLAYED = frozenset({"duplicate.exact"})


class ReplayError(ValueError):
    """A replay was asked of something that cannot be replayed; the message says what can."""


def replayable(table_name: str) -> None:
    spec = table(table_name)
    if spec.layer != "silver" or spec.source is None:
        msg = (f"expected a silver table fed by bronze (e.g. silver.orders), got {table_name!r}; a file refused for "
               "its schema is replayed by fixing it under the landing folder and running its date again (it was "
               "never ingested); lines that are not JSON stay in bronze quarantine for inspection")
        raise ReplayError(msg)


def pending(engine: Engine, ctx: RunContext, table_name: str, rule: str | None) -> nw.LazyFrame:
    """Quarantined (record_hash, rule, run_date) of ``table_name`` that no replay accepted yet: a frame of
    ``engine`` (the replay log is joined there, never read into a list)."""
    replayable(table_name)
    rows = engine.scan(quarantine_for(table(table_name))).filter(~nw.col("rule").is_in(sorted(NOT_REPLAYED)))
    if rule:
        rows = rows.filter(nw.col("rule") == rule)
    found = rows.select("record_hash", "rule", "run_date").unique()
    log = replay_log(ctx.lake(), table_name)
    if log.exists():
        found = found.join(engine.scan_log(log).select("record_hash").unique(), on="record_hash", how="anti")
    return found


@task(name="replay", task_run_name="replay-{table_name}", cache_policy=NO_CACHE)
def replay_table(ctx: RunContext, table_name: str, rule: str | None = None) -> dict[str, Any]:
    """Send the pending quarantined rows of ``table_name`` through conform again, one ingest date at a time;
    after each date, the hashes of the rows it accepted are appended to the replay log by the engine. Only a
    row per ingest date (its date and count) comes to this process, however many rows are replayed."""
    spec = table(table_name)
    engine = ctx.engine()
    todo = engine.materialize(pending(engine, ctx, table_name, rule))
    dates = engine.to_arrow(todo.group_by("run_date").agg(nw.len().alias("n")))
    log = replay_log(ctx.lake(), table_name)
    totals: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for day in sorted(dates.column("run_date").to_pylist()):
        keys = todo.filter(nw.col("run_date") == nw.lit(day).cast(nw.Date())).select(
            nw.col("record_hash").alias("_record_hash")).unique()
        bronze = engine.scan(table(spec.source or "")).filter(
            nw.col("_ingest_date") == nw.lit(day).cast(nw.Date()))
        batch = engine.materialize(bronze.join(keys, on="_record_hash", how="semi"))
        # The batch's own date: rules valued at a date see the same day, and rows that fail again land on
        # the quarantine partition (and key) they already have, so they are not written twice.
        day_ctx = ctx.model_copy(update={"run_date": day})
        done = conform_into_silver(day_ctx, engine, spec, batch, late_ok=True)
        totals.update({k: done[k] for k in ("rows_in", "accepted", "quarantined", "rows_written")})
        rules.update(done["rules"])
        if done["accepted"]:
            accepted = done["accepted_rows"].select(nw.col("_record_hash").alias("record_hash")).unique()
            if log.exists():  # a record quarantined on two dates is logged once
                accepted = accepted.join(engine.scan_log(log).select("record_hash"), on="record_hash", how="anti")
            engine.append_log(log, accepted.with_columns(
                nw.lit(rule or "*").alias("rule"), nw.lit(ctx.run_id).alias("replay_id"),
                nw.lit(datetime.now(UTC), dtype=nw.Datetime("us", "UTC")).alias("replayed_at")))
    return {"stage": "replay", "table": table_name, "pending": sum(dates.column("n").to_pylist()), **totals,
            "still_quarantined": dict(rules), "version": engine.version(spec)}


def accepted_by(engine: Engine, ctx: RunContext, table_name: str, replay_id: str) -> nw.LazyFrame:
    """The ``_record_hash`` of the rows of ``table_name`` that replay ``replay_id`` accepted (from its log)."""
    log = engine.scan_log(replay_log(ctx.lake(), table_name))
    return log.filter(nw.col("replay_id") == replay_id).select(nw.col("record_hash").alias("_record_hash"))


def replayed_order_dates(engine: Engine, table_name: str, accepted: nw.LazyFrame) -> list[date]:
    """The order dates whose gold partitions the replay's accepted rows (``accepted``: their ``_record_hash``, a
    frame of the engine, of ``table_name``) change: the same rule as a daily run's plan, with the replayed rows
    as the batch (replayed events may be older than the lookback, so every event partition is read)."""
    none = accepted.head(0)

    def batch(name: str) -> nw.LazyFrame:
        return accepted if name == table_name else none

    return affected_order_dates(engine, orders_batch=batch("silver.orders"), events_batch=batch("silver.order_events"),
                                customers_batch=batch("silver.customers"))
