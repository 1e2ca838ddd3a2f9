"""The cluster engine: PySpark DataFrames, Delta tables through DataFrameWriter and Spark SQL.

One code path serves a classic SparkSession with delta-spark (EMR) and Spark Connect servers (Sail, or
Spark's own): reads with ``format("delta")`` and ``versionAsOf``, writes with ``DataFrameWriter`` (``replaceWhere``
for partition overwrites) and ``MERGE INTO``. Table metadata (version, history, protocol) is read on the driver
with delta-rs, which reads any table either engine wrote.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import narwhals as nw
import pyarrow as pa

from lakehouse.backends import landing
from lakehouse.backends.expressions import with_record_hash
from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog
from lakehouse.backends.protocol import ContractViolation, EngineError, Gap, LandingRead, WriteResult
from lakehouse.backends.spark import landing as tasks_landing
from lakehouse.contracts.catalog import TableSpec
from lakehouse.contracts.checks import count_violations
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

def spark_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """An Arrow table as a Spark DataFrame with the same column types (also when it has no rows)."""
    return spark.createDataFrame(table, schema=_ddl(table.schema)) if table.num_rows == 0 else spark.createDataFrame(table)


def _ddl(schema: pa.Schema) -> str:
    """The Spark DDL of an Arrow schema (``_spark_type`` per column)."""
    return ", ".join(f"`{f.name}` {_spark_type(f.type)}" for f in schema)


def _spark_type(dtype: pa.DataType) -> str:
    """The Spark SQL type of an Arrow type (the catalog's tables use string, int64, double, date, UTC timestamp
    and bool)."""
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_date32(dtype):
        return "date"
    if pa.types.is_timestamp(dtype):
        return "timestamp" if dtype.tz else "timestamp_ntz"
    if pa.types.is_integer(dtype):
        return "bigint" if dtype.bit_width == 64 else "int"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    if pa.types.is_floating(dtype):
        return "double"
    msg = f"expected an Arrow type the Spark engine maps (string, integer, double, date, timestamp, bool), got {dtype}"
    raise EngineError(msg)



SessionKind = Literal["classic", "connect", "sail"]

#: The Parquet codec of the rows staged under ``_staging/`` (read back once or twice, then removed): Spark's own
#: default, where Sail's is ZSTD. Staging the 1.01M bronze orders on Sail, median of 6 alternating: ZSTD 0.84 s,
#: Snappy 0.78 s, LZ4 0.75 s, none 0.70 s (at 1.6-1.9x ZSTD's bytes, which a lake on S3 sends over the network).
STAGING_CODEC = "snappy"

# What the Spark engine does differently from the protocol, by session kind (docs/engines.md).
GAPS: dict[SessionKind, tuple[Gap, ...]] = {
    "sail": (),
    "connect": (),
    "classic": (),
}
GAPS_ALL_KINDS = (
    Gap("spark", "scan_changes", "returns the whole table at both versions (Spark lists no files added and "
        "removed); the caller's comparison finds the same changed rows, reading more",
        "the polars engine reads only the files added and removed since the version"),
)


def _remove_folders(lake: Lake, folders: list[str]) -> None:
    """Remove (and forget) staged folders under the lake root."""
    while folders:
        lake.remove_folder(folders.pop())


def _writing(method: Any) -> Any:
    """A write of the engine: the rows it staged (``_staged``) are removed when the outermost write ends, done
    or failed."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._writes += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._writes -= 1
            if self._writes == 0:
                _remove_folders(self.lake, self._staging)

    return wrapper


class SparkDeltaEngine:
    """PySpark + Delta behind the engine protocol, over a classic SparkSession, a Spark Connect server or the
    embedded Sail server (``kind``)."""

    name = "spark"

    def __init__(self, lake: Lake, spark: SparkSession, kind: SessionKind) -> None:
        self.lake = lake
        self.spark = spark
        self.kind = kind
        self.gaps = GAPS[kind] + GAPS_ALL_KINDS
        self._staging: list[str] = []  # folders under the lake root that the write under way staged rows in
        self._kept: list[str] = []  # folders of materialised rows, removed on release
        weakref.finalize(self, _remove_folders, lake, self._kept)
        self._writes = 0  # writes under way (nested ones included)

    # ------------------------------------------------------------------------------------------ frames
    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        return nw.from_native(spark_frame(self.spark, table))

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return self._arrow(_native(frame))

    def count(self, frame: nw.LazyFrame) -> int:
        return int(_native(frame).count())

    def materialize(self, frame: nw.LazyFrame) -> nw.LazyFrame:
        """Compute once: classic Spark keeps a local checkpoint; over Spark Connect (Sail cannot cache) the rows
        are written once as Parquet under the lake's ``_staging/`` and read from there, removed when the engine
        is released (``release``, or when it is garbage collected)."""
        native = _native(frame)
        if self.kind == "classic":
            return nw.from_native(native.localCheckpoint(eager=True))
        return nw.from_native(self._staged(native, keep=True))

    def materialize_subset(self, frame: nw.LazyFrame) -> nw.LazyFrame:
        """``frame`` as it is: a filter and row-wise columns over rows materialised before cost less to compute
        again from them at each use than to write once more (on Sail, writing 1.28M order events to
        ``_staging/`` and reading them back takes 0.8-0.9 s; counting them from the rows they came from, 0.01 s)."""
        return frame

    # ----------------------------------------------------------------------------------- landing files
    def read_landing(self, entity: LandingEntity, files: Sequence[tuple[Path, str]]) -> LandingRead:
        """Landing files are read by Spark's tasks with the reader both engines share (``backends/spark/
        landing.py``): the same bytes give the same rows, rejects and refusals as on the laptop. Their output is
        materialised once; rows and rejects stay frames of the engine, and only a row per file (its records,
        or why it was refused) comes to the driver."""
        if not files:
            read = landing.read_files(entity, [])
            return LandingRead(with_record_hash(self.from_arrow(read.rows), entity.column_names),
                               self.from_arrow(read.rejects), read.refused, {})
        ddl = _ddl(tasks_landing.output_schema(entity))
        out = tasks_landing.read_on_tasks(self.spark, entity, files, ddl)
        staged = out.localCheckpoint(eager=True) if self.kind == "classic" else self._staged(out, keep=True, ddl=ddl)
        refused, records = tasks_landing.split_outcomes(self.to_arrow(nw.from_native(tasks_landing.outcomes_of(staged))))
        rows = with_record_hash(nw.from_native(tasks_landing.rows_of(staged, entity)), entity.column_names)
        return LandingRead(rows, nw.from_native(tasks_landing.rejects_of(staged)), refused, records)

    # ------------------------------------------------------------------------------------ Delta tables
    def exists(self, spec: TableSpec) -> bool:
        return self.lake.version(spec) is not None

    def scan(self, spec: TableSpec, *, version: int | None = None) -> nw.LazyFrame:
        if not self.lake.check_readable(spec, version):
            return nw.from_native(spark_frame(self.spark, spec.arrow_schema.empty_table()))
        uri = self.lake.uri(spec)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return nw.from_native(self._delta(lambda: reader.load(uri)).select(*spec.columns))

    @_writing
    def append(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        data, rows = self._checked(spec, frame)
        if rows == 0 and self.exists(spec):
            return WriteResult(spec.name, self.lake.written_version(spec), 0)
        return self._write(spec, data, rows, mode="append")

    @_writing
    def overwrite(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        data, rows = self._checked(spec, frame)
        return self._write(spec, data, rows, mode="overwrite")

    @_writing
    def overwrite_partitions(self, spec: TableSpec, frame: nw.LazyFrame, *,
                             partitions: dict[str, list[Any]] | None = None) -> WriteResult:
        """Replace exactly the partitions present in ``frame`` (or those named in ``partitions``: column ->
        values, which ``frame``'s rows must lie in; then an empty ``frame`` empties them); other partitions stay
        as they are."""
        if not spec.partition_by:
            msg = f"expected a partitioned table for overwrite_partitions, got {spec.name!r} (no partition columns)"
            raise ValueError(msg)
        data, rows = self._checked(spec, frame)
        if partitions is None:
            done = self._create_or_skip(spec, data, rows)
            if done is not None:
                return done
            return self._write(spec, data, rows, mode="overwrite", replace_where=self._partitions(data, spec))
        if not self.exists(spec):
            return self._write(spec, data, rows, mode="overwrite")
        predicate = partition_predicate(partitions)
        stray = data.filter(f"NOT ({predicate})").limit(1).count() if rows else 0
        if stray:
            msg = f"expected rows for {spec.name!r} in partitions {partitions}, got rows outside them"
            raise ValueError(msg)
        return self._write(spec, data, rows, mode="overwrite", replace_where=predicate)

    @_writing
    def merge(self, spec: TableSpec, frame: nw.LazyFrame, *, insert_only: bool = False) -> WriteResult:
        """Upsert by ``spec.keys`` with ``MERGE INTO``: the larger ``spec.latest_by`` (then ``_record_hash``) wins."""
        if not spec.keys:
            msg = f"expected business keys to merge {spec.name!r}; declare keys in contracts/catalog.py"
            raise ValueError(msg)
        data, rows = self._checked(spec, frame)
        done = self._create_or_skip(spec, data, rows)
        if done is not None:
            return done
        on = [f"t.`{k}` = s.`{k}`" for k in spec.keys]
        if spec.partition_by:
            on.append(self._partitions(data, spec, alias="t"))
        sql = f"MERGE INTO delta.`{self.lake.uri(spec)}` AS t USING {{view}} AS s ON {' AND '.join(on)} "
        if not insert_only:
            newer = ""
            if spec.latest_by:
                lb = spec.latest_by
                newer = f" AND (s.`{lb}` > t.`{lb}` OR (s.`{lb}` = t.`{lb}` AND s._record_hash > t._record_hash))"
            sql += f"WHEN MATCHED{newer} THEN UPDATE SET * "
        sql += "WHEN NOT MATCHED THEN INSERT *"
        view = f"_merge_source_{uuid.uuid4().hex}"
        data.createOrReplaceTempView(view)
        try:
            result = self._delta(lambda: self.spark.sql(sql.format(view=view)).collect())
        finally:
            self.spark.catalog.dropTempView(view)
        written = int(result[0][0]) if result and len(result[0]) else rows
        return WriteResult(spec.name, self.lake.written_version(spec), written)

    @_writing
    def replace_rows(self, spec: TableSpec, old: nw.LazyFrame, new: nw.LazyFrame) -> WriteResult:
        """Delete the rows whose ``spec.keys`` are those of ``old`` and write ``new`` (one row per key, each a
        key of ``old``) in their place, whatever ``latest_by`` says: one ``MERGE INTO`` that updates the keys
        with a new row and deletes the others."""
        if not self.exists(spec):
            return WriteResult(spec.name, None, 0)
        data, rows = self._checked(spec, new)
        keys = _native(old).select(*(f"`{k}`" for k in spec.keys)).distinct()
        flag = "_replace_with_new"
        source = keys.join(data.withColumn(flag, self._functions().lit(True)), on=list(spec.keys), how="left")
        on = [f"t.`{k}` = s.`{k}`" for k in spec.keys]
        cols = ", ".join(f"t.`{c}` = s.`{c}`" for c in spec.columns)
        sql = (f"MERGE INTO delta.`{self.lake.uri(spec)}` AS t USING {{view}} AS s ON {' AND '.join(on)} "
               f"WHEN MATCHED AND s.`{flag}` THEN UPDATE SET {cols} WHEN MATCHED THEN DELETE")
        view = f"_replace_source_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        try:
            self._delta(lambda: self.spark.sql(sql.format(view=view)).collect())
        finally:
            self.spark.catalog.dropTempView(view)
        return WriteResult(spec.name, self.lake.written_version(spec), rows)

    def scan_changes(self, spec: TableSpec, since: int) -> tuple[nw.LazyFrame, nw.LazyFrame]:
        """The rows that may have left the table since version ``since`` and the rows that may have come in:
        here the whole table at ``since`` and the whole table now (Spark reads no file list; the caller's
        comparison finds the changed rows all the same, reading more)."""
        return self.scan(spec, version=since), self.scan(spec)

    def version(self, spec: TableSpec) -> int | None:
        return self.lake.version(spec)

    def history(self, spec: TableSpec, *, limit: int = 10) -> list[dict[str, Any]]:
        return self.lake.history(spec, limit)

    # ---------------------------------------------------------------------------------- the lake's logs
    def scan_log(self, log: LakeLog) -> nw.LazyFrame:
        """The log read by Spark (a Delta table like any other); an empty frame with its declared schema if it
        was never written."""
        if self.lake.log_table(log.path) is None:
            return self.from_arrow(log.spec.schema.empty_table())
        names = log.spec.schema.names
        return nw.from_native(self._delta(lambda: self.spark.read.format("delta").load(log.uri)).select(*names))

    @_writing
    def append_log(self, log: LakeLog, frame: nw.LazyFrame) -> None:
        """Append ``frame``'s rows to the log in one commit, written by Spark's tasks: the rows never come to the
        driver. A log not written yet is first created empty by delta-rs with its declared schema (and the
        lake's table properties), as every log is."""
        if self.lake.log_table(log.path) is None:
            self.lake.append_log(log.path, log.spec.schema.empty_table())
        F = self._functions()
        data = _native(frame).select(*[F.col(f.name).cast(_spark_type(f.type)).alias(f.name)
                                       for f in log.spec.schema])
        self._delta(lambda: data.write.format("delta").mode("append").save(log.uri))

    # -------------------------------------------------------------------------------------- internals
    def _functions(self) -> Any:
        """pyspark's column functions for this session (Spark Connect has its own module)."""
        if self.kind == "classic":
            from pyspark.sql import functions
        else:
            from pyspark.sql.connect import functions  # type: ignore[no-redef]
        return functions

    def _checked(self, spec: TableSpec, frame: nw.LazyFrame) -> tuple[DataFrame, int]:
        """The rows to write, cast to the declared types and checked against the contract (one pass)."""
        F = self._functions()
        native = _native(frame)
        try:
            typed = native.select(*(F.col(f"`{f.name}`").cast(_spark_type(f.type)).alias(f.name)
                                    for f in spec.arrow_schema))
            if self.kind == "classic":
                typed = _native(self.materialize(nw.from_native(typed)))
            else:
                typed = self._staged(typed, ddl=_ddl(spec.arrow_schema))
        except Exception as exc:
            _raise_missing_columns(native, spec, exc)  # the schema is asked only when the rows cannot be shaped
            raise
        rows, problems = count_violations(nw.from_native(typed), spec.schema, to_arrow=self.to_arrow)
        if problems:
            first = ", ".join(f"{col or '(table)'}: {check} x{n}" for col, check, n in problems[:5])
            msg = (f"expected rows for {spec.name!r} to satisfy its contract (contracts/catalog.py); "
                   f"{len(problems)} check(s) failed: {first}")
            raise ContractViolation(msg)
        return typed, rows

    def release(self) -> None:
        """Remove the rows this engine staged for ``materialize`` (frames built on them can no longer run)."""
        _remove_folders(self.lake, self._kept)

    def _staged(self, data: DataFrame, *, keep: bool = False, ddl: str | None = None) -> DataFrame:
        """``data`` written once as Parquet under the lake's ``_staging/`` and read back, on a Spark Connect
        server, which may not cache (Sail cannot): the contract check and the Delta write then read the rows instead of
        each computing them again, and a distributed Delta write runs a plain scan (Sail's local-cluster mode
        cannot ship some functions, e.g. ``lower``, to a Delta write's workers). Removed after the write
        (``_writing``). ``ddl``: the rows' schema when the caller knows it; otherwise the files written carry it,
        and only when no rows wrote no file is the server asked for the plan's schema (a round trip that
        analyses the whole plan again)."""
        relative = self._staging_folder(keep=keep)
        uri = self.lake.path_uri(relative)
        self._delta(lambda: data.write.mode("overwrite").option("compression", STAGING_CODEC).parquet(uri))
        if ddl is None and not self.lake.list_files(relative):
            ddl = data.schema
        return (self.spark.read if ddl is None else self.spark.read.schema(ddl)).parquet(uri)

    def _staging_folder(self, *, keep: bool) -> str:
        """A new folder under the lake's ``_staging/``, removed after the write under way, or on ``release``
        with ``keep``."""
        relative = f"_staging/{uuid.uuid4().hex}"
        (self._kept if keep else self._staging).append(relative)
        return relative

    def _create_or_skip(self, spec: TableSpec, data: DataFrame, rows: int) -> WriteResult | None:
        """A missing table is created from ``data``; an empty batch leaves an existing table as it is.
        None: the table exists and there are rows, so the caller's partial write goes ahead."""
        if not self.exists(spec):
            return self._write(spec, data, rows, mode="overwrite")
        if rows == 0:
            return WriteResult(spec.name, self.lake.written_version(spec), 0)
        return None

    def _partitions(self, data: DataFrame, spec: TableSpec, alias: str | None = None) -> str:
        values = self._arrow(data.select(*spec.partition_by).distinct())
        return partition_predicate({c: values.column(c).to_pylist() for c in spec.partition_by}, alias)

    def _write(self, spec: TableSpec, data: DataFrame, rows: int, *, mode: str,
               replace_where: str | None = None) -> WriteResult:
        self.lake.prepare(spec)
        uri = self.lake.uri(spec)
        creating = not self.exists(spec)
        writer = data.write.format("delta").mode(mode)
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        if replace_where:
            writer = writer.option("replaceWhere", replace_where)
        if creating:
            for key, value in (self.lake.table_configuration or {}).items():
                if value is not None:
                    writer = writer.option(key, value)
        self._delta(lambda: writer.save(uri))
        self.lake.check_features(spec)
        return WriteResult(spec.name, self.lake.written_version(spec), rows)

    def _arrow(self, data: DataFrame) -> pa.Table:
        """The rows of ``data`` on the driver. Spark Connect's ``toArrow`` first asks the server for the schema,
        one more round trip that analyses the plan again, although the execution's response carries the schema:
        here that schema is used (the server is asked only if the response has none)."""
        if self.kind == "classic":
            return data.toArrow()
        from pyspark.sql.pandas.types import to_arrow_schema

        table, schema = data._to_table()  # the public toArrow asks for the schema first
        return table.cast(to_arrow_schema(schema if schema is not None else data.schema,
                                          error_on_duplicated_field_names_in_struct=True, timezone="UTC"))

    def _delta(self, action: Any) -> Any:
        """Run a Delta read/write; a session without Delta gets an error that names the way out."""
        try:
            return action()
        except Exception as exc:
            text = str(exc)
            if "delta" in text.lower() and ("data source" in text.lower() or "DATA_SOURCE_NOT_FOUND" in text
                                            or "ClassNotFound" in text):
                msg = (f"expected a Spark session with Delta Lake, but this {self.kind} session has none "
                       f"({text.splitlines()[0][:200]}); on EMR the cluster ships delta-spark; locally use "
                       "--spark-remote sc://host:port or leave --spark-master unset for the embedded Sail server")
                raise EngineError(msg) from exc
            raise


def partition_predicate(values: dict[str, list], alias: str | None = None) -> str:
    """A SQL predicate matching exactly the given partition values (``{column: [values]}``)."""
    prefix = f"{alias}." if alias else ""
    parts = []
    for col, vals in values.items():
        literals = ", ".join("NULL" if v is None else f"'{v}'" for v in sorted(vals, key=lambda v: (v is None, v)))
        parts.append(f"{prefix}{col} IN ({literals})")
    return " AND ".join(parts)


def _raise_missing_columns(native: DataFrame, spec: TableSpec, failure: Exception) -> None:
    """A ``ContractViolation`` naming the columns of ``spec`` that ``native`` lacks, if any (else nothing: the
    caller re-raises ``failure``, also when the schema cannot be read)."""
    try:
        have = set(native.columns)
    except Exception:  # noqa: BLE001 - the rows' own failure is the error to report
        return
    missing = [c for c in spec.columns if c not in have]
    if missing:
        msg = f"expected columns {missing} in the rows for {spec.name!r}, got {sorted(have)}"
        raise ContractViolation(msg) from failure


def _native(frame: nw.LazyFrame) -> DataFrame:
    return frame.to_native()  # type: ignore[return-value]
