"""Source tasks: pull an entity's new and changed records from its source system into landing files, and
acknowledge a stream's applied micro-batches to the broker."""

from __future__ import annotations

from datetime import date
from typing import Any

import narwhals as nw
import pyarrow as pa

from lakehouse.backends.checkpoints import Checkpoints
from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import bronze_for
from lakehouse.contracts.landing import landing_entity
from lakehouse.tasks.context import RunContext, logger
from lakehouse.tasks.retry_policy import SOURCE_RETRIES
from lakehouse.tasks.tracking import lake_task


@lake_task(lambda p: [], name="extract", task_run_name="extract-{entity_name}", **SOURCE_RETRIES)
def extract_entity(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Pull the run date's new and changed records of one entity from its source system into landing files
    (backends/sources/extract.py: watermark window with lookback, resumable, each record version once)."""
    from lakehouse.backends.sources import connector_for
    from lakehouse.backends.sources.extract import run_extract

    entity = landing_entity(entity_name)
    settings = ctx.settings()
    engine = ctx.engine()
    spec = bronze_for(entity)

    def already_landed(first: date, hashes: pa.Array) -> pa.ChunkedArray:
        """Which of a file's record ``hashes`` bronze holds from ingest date ``first`` on: a join in the engine,
        so at most the file's own hashes come back, however many rows the lookback window holds."""
        if engine.version(spec) is None:
            return pa.chunked_array([], type=pa.string())
        window = engine.scan(spec).filter(nw.col("_ingest_date") >= nw.lit(first).cast(nw.Date())).select("_record_hash")
        mine = engine.from_arrow(pa.table({"_record_hash": hashes.cast(pa.string())}))
        return engine.to_arrow(mine.join(window, on="_record_hash", how="semi").unique()).column("_record_hash")

    sources = settings.sources
    result = run_extract(
        connector_for(entity, settings), lake=Lake(settings.lake_root), landing_root=ctx.landing_dir(),
        run_date=ctx.run_date, run_id=ctx.run_id, lookback_days=settings.lookback_days,
        first_from=date.fromisoformat(sources.first_from) if sources.first_from else None,
        chunk_rows=sources.file_rows, already_landed=already_landed, logger=logger())
    for note in result.notes:
        logger().warning("%s on %s: %s", entity.name, ctx.run_date, note)
    return result.summary()


@lake_task(lambda p: [], name="acknowledge", task_run_name="acknowledge-{entity_name}", **SOURCE_RETRIES)
def acknowledge_stream(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Commit to Kafka the offsets of the micro-batch files bronze has applied (after the bronze commit)."""
    from lakehouse.backends.sources import connector_for
    from lakehouse.backends.sources.extract import ExtractLog

    entity = landing_entity(entity_name)
    settings = ctx.settings()
    applied = Checkpoints(Lake(settings.lake_root), entity).applied()
    landed = [r for r in ExtractLog(Lake(settings.lake_root), entity).rows() if r["file"] and r["file"] in applied]
    if not landed:
        return {"stage": "acknowledge", "table": f"landing:{entity.name}", "offsets": {}}
    offsets = connector_for(entity, settings).commit(landed[-1]["cursor"])  # type: ignore[attr-defined]
    logger().info("%s: committed offsets %s to the consumer group", entity.name, offsets)
    return {"stage": "acknowledge", "table": f"landing:{entity.name}", "offsets": {str(k): v for k, v in offsets.items()}}
