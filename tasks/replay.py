"""The replay task: quarantined silver rows sent through the same conform step again after a fix (the flow
and what it does: flows/quarantine.py). Accepted rows' hashes go to the replay log, so no later replay feeds
them again; exact duplicates (``duplicate.exact``) are never replayed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import narwhals as nw
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

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


def pending(ctx: RunContext, table_name: str, rule: str | None) -> pa.Table:
    """Quarantined (record_hash, rule, run_date) of ``table_name`` that no replay accepted yet."""
    replayable(table_name)
    engine = ctx.engine()
    qspec = quarantine_for(table(table_name))
    if not engine.exists(qspec):
        return pa.table({"record_hash": pa.array([], pa.string()), "rule": pa.array([], pa.string()),
                         "run_date": pa.array([], pa.date32())})
    rows = engine.scan(qspec).filter(~nw.col("rule").is_in(sorted(NOT_REPLAYED)))
    if rule:
        rows = rows.filter(nw.col("rule") == rule)
    found = engine.to_arrow(rows.select("record_hash", "rule", "run_date").unique())
    done = replay_log(ctx.lake(), table_name).table()
    accepted = set(done.column("record_hash").to_pylist()) if done is not None else set()
    keep = [h not in accepted for h in found.column("record_hash").to_pylist()]
    return found.filter(pa.array(keep, pa.bool_())) if found.num_rows else found


@task(name="replay", task_run_name="replay-{table_name}", cache_policy=NO_CACHE)
def replay_table(ctx: RunContext, table_name: str, rule: str | None = None) -> dict[str, Any]:
    """Send the pending quarantined rows of ``table_name`` through conform again, one ingest date at a time."""
    todo = pending(ctx, table_name, rule)
    spec = table(table_name)
    engine = ctx.engine()
    totals: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    accepted_hashes: list[str] = []
    by_date: dict[Any, set[str]] = {}
    for h, d in zip(todo.column("record_hash").to_pylist(), todo.column("run_date").to_pylist(), strict=True):
        by_date.setdefault(d, set()).add(h)
    for day, hashes in sorted(by_date.items()):
        keys = engine.from_arrow(pa.table({"_record_hash": pa.array(sorted(hashes), pa.string())}))
        bronze = engine.scan(table(spec.source or "")).filter(
            nw.col("_ingest_date") == nw.lit(day).cast(nw.Date()))
        batch = engine.materialize(bronze.join(keys, on="_record_hash", how="semi"))
        # The batch's own date: rules valued at a date see the same day, and rows that fail again land on
        # the quarantine partition (and key) they already have, so they are not written twice.
        day_ctx = ctx.model_copy(update={"run_date": day})
        done = conform_into_silver(day_ctx, engine, spec, batch, accepted_hashes=True, late_ok=True)
        totals.update({k: done[k] for k in ("rows_in", "accepted", "quarantined", "rows_written")})
        rules.update(done["rules"])
        accepted_hashes += done["accepted_hashes"]
    if accepted_hashes:
        now = datetime.now(UTC)
        replay_log(ctx.lake(), table_name).append(
            [{"record_hash": h, "rule": rule or "*", "replay_id": ctx.run_id, "replayed_at": now}
             for h in sorted(set(accepted_hashes))])
    return {"stage": "replay", "table": table_name, "pending": todo.num_rows, **totals,
            "still_quarantined": dict(rules), "version": engine.version(spec),
            "accepted_hashes": sorted(set(accepted_hashes))}


def replayed_order_dates(ctx: RunContext, table_name: str, hashes: list[str]) -> list[date]:
    """The order dates whose gold partitions the replay's accepted rows (``hashes`` of ``table_name``) change:
    the same rule as a daily run's plan, with the replayed rows as the batch (replayed events may be older
    than the lookback, so every event partition is read)."""
    engine = ctx.engine()

    def batch(name: str) -> Any:
        mine = hashes if name == table_name else []
        return engine.from_arrow(pa.table({"_record_hash": pa.array(mine, pa.string())}))

    return affected_order_dates(engine, orders_batch=batch("silver.orders"), events_batch=batch("silver.order_events"),
                                customers_batch=batch("silver.customers"))
