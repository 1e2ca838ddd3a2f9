"""Landing files read where Spark runs its tasks: each task reads its files with the reader both engines share
(``backends/landing.py``, through ``mapInArrow``), so the same bytes give the same rows, rejects and refusals as
on the laptop, and the rows never pass through the driver. A task emits, in one output, the rows of its files,
their rejected records and one outcome row per file (its records, or why it was refused); the driver collects
only the outcomes: a row per file, whatever the files hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.backends import landing
from lakehouse.backends.arrow_rows import int_array, text_array
from lakehouse.backends.storage import root_path
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakehouse.backends.storage import AnyPath

# Files are spread over at most MAX_TASKS tasks, one file per task, except JSON-lines files: FILES_PER_TASK per task,
# read by one call of the reader, which decodes the JSON lines of its files together (64 of the order events'
# micro-batch files on an embedded Sail: 1.0 s one file per task, 0.6-0.8 s so; three reads each).
MAX_TASKS = 256
FILES_PER_TASK = 8
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
    per_task = files_per_call(entity)
    listed = spark.range(0, len(files), 1, min(-(-len(files) // per_task), MAX_TASKS))
    schema = output_schema(entity)
    return listed.mapInArrow(_reader(entity, [(str(p), label) for p, label in files], schema, per_task), ddl)


def files_per_call(entity: LandingEntity) -> int:
    """How many files a task reads by one call of the reader: ``FILES_PER_TASK`` of JSON lines (decoded
    together), one of other formats (a task holds one file's rows at a time)."""
    return FILES_PER_TASK if entity.format == "jsonl" else 1


def _reader(entity: LandingEntity, files: list[tuple[str, str]], schema: pa.Schema, per_call: int
            ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function a task runs over its batches of file indices (shipped to the task with ``files``: the
    paths as text, ``s3://`` ones included), ``per_call`` files per call of the reader."""
    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            indices = batch.column(0).to_pylist()
            for start in range(0, len(indices), per_call):
                chunk = indices[start:start + per_call]
                got = landing.read_files(entity, [(root_path(files[i][0]), files[i][1]) for i in chunk])
                yield from _emitted(schema, chunk, [files[i][1] for i in chunk], got)

    return read


def _emitted(schema: pa.Schema, indices: list[int], labels: list[str], got: landing.ArrowRead
             ) -> Iterator[pa.RecordBatch]:
    """What one read of the files ``indices`` (named ``labels``) gave, as output batches: its rows, its rejects,
    and one outcome per file."""
    index = int_array(indices)

    def file_of(table: pa.Table) -> pa.Array:
        return index.take(pc.index_in(table["_source_file"], text_array(labels)))

    yield from _emit(schema, ROW, file_of(got.rows), got.rows)
    rejects = got.rejects.rename_columns(["_rule", "_reason", "_record", "_record_hash", "_source_file"])
    yield from _emit(schema, REJECT, file_of(rejects), rejects)
    refused = {r["source_file"]: r for r in got.refused.to_pylist()}
    yield from _emit(schema, OUTCOME, index, pa.table({
        "_source_file": text_array(labels),
        "_records": pa.array([got.records.get(label) for label in labels], pa.int64()),
        "_problem": text_array([refused.get(label, {}).get("problem") for label in labels]),
        "_reason": text_array([refused.get(label, {}).get("reason") for label in labels])}))


def _emit(schema: pa.Schema, kind: str, index: pa.Array, table: pa.Table) -> Iterator[pa.RecordBatch]:
    """``table``'s rows as batches of the output ``schema`` (columns it lacks are null); ``index``: each row's
    file (its index in the list read)."""
    n = table.num_rows
    if not n:
        return
    own = {"_kind": pa.repeat(pa.scalar(kind, pa.string()), n), "_file": index}
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
