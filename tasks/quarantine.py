"""Quarantine writes and counts shared by the bronze and silver tasks; every row is accounted for."""

from __future__ import annotations

import narwhals as nw

from lakehouse.backends import Engine
from lakehouse.backends.logs import LakeLog
from lakehouse.contracts.catalog import TableSpec, quarantine_for
from lakehouse.tasks.context import RunContext


class AccountingError(RuntimeError):
    """A stage lost or invented rows: input rows != accepted + quarantined."""


def write_quarantine(engine: Engine, spec: TableSpec, frame: nw.LazyFrame, ctx: RunContext, *,
                     replace: bool = False) -> tuple[int, dict[str, int]]:
    """Write rejected rows (rule, reason, record, record_hash, source_file) to ``spec``'s quarantine table; with
    ``replace``, they replace the run date's partition (no rows: it is emptied). ``frame`` is a frame of the
    engine, materialised by the caller: its rows are written by the engine and only their count per rule comes
    back to the driver."""
    counts = engine.to_arrow(frame.group_by("rule").agg(nw.len().alias("n")))
    rules = dict(zip(counts.column("rule").to_pylist(), counts.column("n").to_pylist(), strict=True))
    rows = sum(rules.values())
    qspec = quarantine_for(spec)
    if rows == 0 and not (replace and engine.exists(qspec)):
        return 0, {}
    stamped = frame.with_columns(
        nw.col("record_hash").cum_count().over("record_hash", "rule", "source_file", order_by="record_hash"
                                               ).alias("occurrence"),
        nw.lit(ctx.run_id).alias("run_id"),
        nw.lit(ctx.run_date).cast(nw.Date()).alias("run_date"),
    )
    if replace:
        engine.overwrite_partitions(qspec, stamped, partitions={"run_date": [ctx.run_date]})
    else:
        engine.merge(qspec, stamped, insert_only=True)
    return rows, rules


def quarantined_on_run_date(ctx: RunContext, engine: Engine, spec: TableSpec, *,
                            replayed: LakeLog | None = None) -> dict[str, int]:
    """How many rows the quarantine of ``spec`` holds for the run date, by rule; with ``replayed`` (a replay log),
    without the rows a replay has accepted since. A row a replay sent back under another rule counts once,
    under its first rule."""
    qspec = quarantine_for(spec)
    if not engine.exists(qspec):
        return {}
    rows = engine.scan(qspec).filter(nw.col("run_date") == nw.lit(ctx.run_date).cast(nw.Date()))
    if replayed is not None and replayed.exists():  # the accepted hashes stay in the engine: a join, not a list
        rows = rows.join(engine.scan_log(replayed).select("record_hash").unique(), on="record_hash", how="anti")
    firsts = rows.group_by("record_hash", "source_file", "occurrence").agg(nw.col("rule").min())
    counts = engine.to_arrow(firsts.group_by("rule").agg(nw.len().alias("n")))
    return dict(zip(counts.column("rule").to_pylist(), counts.column("n").to_pylist(), strict=True))

