"""Landing files read where Spark runs its tasks: each task reads its files with the reader both engines share
(``backends/landing.py``, through ``mapInArrow``), so the same bytes give the same rows, rejects and refusals as
on the laptop, and the rows never pass through the driver. A task emits, in one output, the rows of its files,
their rejected records and one outcome row per file (its records, or why it was refused); the driver collects
only the outcomes: a row per file, whatever the files hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from lakehouse.backends import landing
from lakehouse.backends.storage import root_path
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakehouse.backends.storage import AnyPath

MAX_TASKS = 256  # files are spread over at most this many tasks (one task per file below it)
_BATCH_ROWS = 65_536  # rows per Arrow batch a task hands back

ROW, REJECT, OUTCOME = "row", "reject", "outcome"
# What every output row carries besides the entity's columns and ``_source_file``: its kind, the index of its
# file in the list read, a reject's quarantine columns, a refused file's problem and a read file's records.
_META = (("_kind", pa.string()), ("_file", pa.int64()), ("_rule", pa.string()), ("_reason", pa.string()),
         ("_record", pa.string()), ("_record_hash", pa.string()), ("_problem", pa.string()),
         ("_records", pa.int64()))


def output_schema(entity: LandingEntity) -> pa.Schema:
    """The schema of what the tasks emit for ``entity``: the entity's columns and ``_source_file`` as text, then
    the ``_META`` columns."""
    taken = {name for name, _ in _META} & set(entity.column_names)
    if taken:
        msg = f"expected landing columns of {entity.name} not named like the reader's own {sorted(taken)}"
        raise ValueError(msg)
    return pa.schema([*((c, pa.string()) for c in (*entity.column_names, "_source_file")), *_META])


def read_on_tasks(spark: SparkSession, entity: LandingEntity, files: Sequence[tuple[AnyPath, str]], ddl: str
                  ) -> DataFrame:
    """Every kind of output row of ``files`` (``(path, label)``, at least one) as one DataFrame computed by
    Spark's tasks (``ddl``: ``output_schema`` as Spark DDL); the caller materialises it once and splits it by
    ``_kind`` (``rows_of``, ``rejects_of``, ``outcomes_of``)."""
    listed = spark.range(0, len(files), 1, min(len(files), MAX_TASKS))
    schema = output_schema(entity)
    return listed.mapInArrow(_reader(entity, [(str(p), label) for p, label in files], schema), ddl)


def _reader(entity: LandingEntity, files: list[tuple[str, str]], schema: pa.Schema
            ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function a task runs over its batches of file indices (shipped to the task with ``files``: the
    paths as text, ``s3://`` ones included)."""
    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for i in batch.column(0).to_pylist():
                path, label = files[i]
                got = landing.read_files(entity, [(root_path(path), label)])
                yield from _emit(schema, ROW, i, got.rows)
                yield from _emit(schema, REJECT, i, got.rejects.rename_columns(
                    ["_rule", "_reason", "_record", "_record_hash", "_source_file"]))
                outcome = {"_source_file": [label], "_records": [got.records.get(label)]}
                if got.refused.num_rows:
                    refused = got.refused.to_pylist()[0]
                    outcome |= {"_problem": [refused["problem"]], "_reason": [refused["reason"]]}
                yield from _emit(schema, OUTCOME, i, pa.table(outcome))

    return read


def _emit(schema: pa.Schema, kind: str, index: int, table: pa.Table) -> Iterator[pa.RecordBatch]:
    """``table``'s rows as batches of the output ``schema`` (columns it lacks are null)."""
    n = table.num_rows
    if not n:
        return
    own = {"_kind": pa.repeat(pa.scalar(kind, pa.string()), n), "_file": pa.repeat(pa.scalar(index), n)}
    out = pa.table([own[f.name] if f.name in own
                    else table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
                    for f in schema], schema=schema)
    yield from out.to_batches(max_chunksize=_BATCH_ROWS)


def rows_of(staged: DataFrame, entity: LandingEntity) -> DataFrame:
    """The rows read: the entity's columns and ``_source_file``, as text."""
    return staged.filter(staged["_kind"] == ROW).select(*entity.column_names, "_source_file")


def rejects_of(staged: DataFrame) -> DataFrame:
    """The records that could not become rows, with the quarantine columns (``landing.REJECT_SCHEMA``)."""
    kept = staged.filter(staged["_kind"] == REJECT)
    return kept.select(*(kept[f"_{c}" if c != "source_file" else "_source_file"].alias(c)
                         for c in landing.REJECT_SCHEMA.names))


def outcomes_of(staged: DataFrame) -> DataFrame:
    """A row per file: ``_file, _source_file, _records, _problem, _reason`` (``_problem`` null: read whole)."""
    return staged.filter(staged["_kind"] == OUTCOME).select("_file", "_source_file", "_records", "_problem",
                                                            "_reason")


def split_outcomes(outcomes: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """The refused files (``landing.REFUSED_SCHEMA``, in the order they were listed) and each read file's
    records, from the collected ``outcomes``."""
    ordered = sorted(outcomes.to_pylist(), key=lambda r: r["_file"])
    refused = [{"source_file": r["_source_file"], "problem": r["_problem"], "reason": r["_reason"]}
               for r in ordered if r["_problem"] is not None]
    records = {r["_source_file"]: r["_records"] for r in ordered if r["_problem"] is None}
    return pa.Table.from_pylist(refused, schema=landing.REFUSED_SCHEMA), records
