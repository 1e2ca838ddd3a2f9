"""Bronze: landing rows as raw text plus lineage. Append-only; a file is ingested once."""

from __future__ import annotations

from datetime import date, datetime

import narwhals as nw


def with_lineage(rows: nw.LazyFrame, *, run_id: str, ingested_at: datetime, ingest_date: date) -> nw.LazyFrame:
    """Stamp rows read from landing files with the run that ingested them (``_source_file``/``_record_hash``
    come from the reader)."""
    return rows.with_columns(
        nw.lit(run_id).alias("_run_id"),
        nw.lit(ingested_at).cast(nw.Datetime("us", "UTC")).alias("_ingested_at"),
        nw.lit(ingest_date).cast(nw.Date()).alias("_ingest_date"),
    )


def batch_for(bronze: nw.LazyFrame, run_date: date) -> nw.LazyFrame:
    """The bronze rows ingested for ``run_date``: the input of that date's silver stage."""
    return bronze.filter(nw.col("_ingest_date") == nw.lit(run_date).cast(nw.Date()))


def ingested_files(bronze: nw.LazyFrame) -> nw.LazyFrame:
    """Each ``_source_file`` in a bronze frame with its row count (``rows``)."""
    return bronze.group_by("_source_file").agg(nw.len().alias("rows"))
