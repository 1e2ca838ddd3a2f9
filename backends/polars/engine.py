"""The laptop engine: Polars lazy frames, Delta tables through delta-rs (``deltalake``). No JVM."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import narwhals as nw
import polars as pl
import pyarrow as pa

from lakehouse.backends import landing
from lakehouse.backends.arrow_rows import empty_table, from_stream
from lakehouse.backends.expressions import with_record_hash
from lakehouse.backends.lake import Lake, paths_of
from lakehouse.backends.logs import LakeLog
from lakehouse.backends.polars import delta_files
from lakehouse.backends.protocol import ContractViolation, Gap, LandingRead, WriteResult
from lakehouse.contracts.catalog import TableSpec
from lakehouse.contracts.checks import count_violations
from lakehouse.contracts.landing import LandingEntity


class PolarsDeltaEngine:
    """Polars + delta-rs behind the engine protocol."""

    name = "polars"
    gaps: tuple[Gap, ...] = ()  # none: every operation of the protocol, on one machine

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    # ------------------------------------------------------------------------------------------ frames
    def from_arrow(self, table: pa.Table) -> nw.LazyFrame:
        return nw.from_native(pl.from_arrow(table).lazy())  # type: ignore[union-attr]

    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table:
        return frame.collect().to_arrow()

    def count(self, frame: nw.LazyFrame) -> int:
        return int(frame.select(nw.len()).collect().item())

    def materialize(self, frame: nw.LazyFrame) -> nw.LazyFrame:
        """Compute ``frame`` once so that counting and writing it do not compute it twice."""
        return frame.collect().lazy()

    def materialize_subset(self, frame: nw.LazyFrame) -> nw.LazyFrame:
        """Held on its own, so the wider rows it was taken from are freed once the caller drops them."""
        return self.materialize(frame)

    # ----------------------------------------------------------------------------------- landing files
    def read_landing(self, entity: LandingEntity, files: Sequence[tuple[Path, str]]) -> LandingRead:
        read = landing.read_files(entity, files)
        rows = pl.from_arrow(read.rows).lazy()  # type: ignore[union-attr]
        hashed = with_record_hash(nw.from_native(rows), entity.column_names)
        return LandingRead(hashed, self.from_arrow(read.rejects), read.refused, read.records)

    # ------------------------------------------------------------------------------------ Delta tables
    def exists(self, spec: TableSpec) -> bool:
        return self.lake.version(spec) is not None

    def scan(self, spec: TableSpec, *, version: int | None = None) -> nw.LazyFrame:
        """The table as a lazy frame; an empty frame with the declared schema if it was never written."""
        if not self.lake.check_readable(spec, version):
            return nw.from_native(pl.LazyFrame(schema=spec.polars_schema))
        # The log already loaded in this process (the latest version, or a snapshot at ``version``).
        source = self.lake.delta_table(spec) if version is None else self.lake.delta_table_at(spec, version)
        lf = pl.scan_delta(source)
        return nw.from_native(lf.select(spec.columns))

    def append(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        data = self._checked(spec, frame)
        dt = self.lake.delta_table(spec)
        if data.height == 0 and dt is not None:
            return WriteResult(spec.name, dt.version(), 0)
        return self._commit(spec, dt, data, mode="append")

    def overwrite(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        return self._commit(spec, self.lake.delta_table(spec), self._checked(spec, frame), mode="overwrite")

    def overwrite_partitions(self, spec: TableSpec, frame: nw.LazyFrame, *,
                             partitions: dict[str, list[Any]] | None = None) -> WriteResult:
        """Replace exactly the partitions present in ``frame`` (or those named in ``partitions``: column ->
        values, which ``frame``'s rows must lie in; then an empty ``frame`` empties them); other partitions stay
        as they are."""
        if not spec.partition_by:
            msg = f"expected a partitioned table for overwrite_partitions, got {spec.name!r} (no partition columns)"
            raise ValueError(msg)
        if partitions is None:
            data, dt, done = self._into_existing(spec, frame)
            if done is not None:
                return done
            return self._commit(spec, dt, data, mode="overwrite", partitions=_partitions(data, spec.partition_by))
        data = self._checked(spec, frame)
        outside = _partitions(data, spec.partition_by)
        stray = {c: sorted(set(v) - set(partitions.get(c, ())), key=str) for c, v in outside.items()}
        if any(stray.values()):
            msg = f"expected rows for {spec.name!r} in partitions {partitions}, got rows in {stray}"
            raise ValueError(msg)
        dt = self.lake.delta_table(spec)
        return self._commit(spec, dt, data, mode="overwrite", partitions=partitions if dt is not None else None)

    def merge(self, spec: TableSpec, frame: nw.LazyFrame, *, insert_only: bool = False) -> WriteResult:
        """Upsert by ``spec.keys``: the row with the larger ``spec.latest_by`` (then ``_record_hash``) wins.

        The source must hold one row per key (the caller deduplicates). With ``insert_only`` existing keys are
        left alone. Only the target files that can hold a source key are read: those in the source's partitions
        whose key statistics (min and max in the Delta log) overlap the source's keys. Only the files holding a
        row that changes are rewritten; rows of new keys go to new files. One commit removes the rewritten files
        and adds the new ones.
        """
        if not spec.keys:
            msg = f"expected business keys to merge {spec.name!r}; declare keys in contracts/catalog.py"
            raise ValueError(msg)
        data, dt, done = self._into_existing(spec, frame)
        if done is not None:
            return done
        keys = list(spec.keys)
        scanned, skipped, files = _candidate_files(dt, data, spec)
        target = self._read_files(spec, dt, files, spec.columns)
        matched = target.join(data.select(keys), on=keys, how="semi")
        new_rows = data.join(matched.select(keys), on=keys, how="anti")
        changed = (data.clear() if insert_only or matched.height == 0
                   else _newer(data.join(matched.select(keys), on=keys, how="semi"), matched, spec))
        # The files holding a row that changes are rewritten: their other rows, then the new versions.
        touched = set(matched.join(changed.select(keys), on=keys, how="semi").get_column("_file"))
        kept = target.filter(pl.col("_file").is_in(touched)).join(changed.select(keys), on=keys, how="anti")
        if touched or new_rows.height:
            version = self._commit(spec, dt, pl.concat([kept.drop("_file"), changed, new_rows]), mode="append",
                                   removes=delta_files.removes_of(dt, sorted(touched))).version
        else:
            version = dt.version()
        return WriteResult(spec.name, version, new_rows.height + changed.height, files_scanned=scanned,
                           files_skipped=skipped)

    def replace_rows(self, spec: TableSpec, old: nw.LazyFrame, new: nw.LazyFrame) -> WriteResult:
        """Delete the rows whose ``spec.keys`` are those of ``old`` (rows of the table) and write ``new`` (one
        row per key, each a key of ``old``; a key without one stays deleted) in their place: whatever
        ``latest_by`` says, in one commit. Only the files holding one of the keys are rewritten."""
        dt = self.lake.delta_table(spec)
        gone = old.select(spec.columns).collect().to_native().cast(spec.polars_schema)  # type: ignore[arg-type]
        if dt is None or gone.height == 0:
            return WriteResult(spec.name, None if dt is None else dt.version(), 0)
        data = self._checked(spec, new)
        keys = list(spec.keys)
        scanned, skipped, files = _candidate_files(dt, gone, spec)
        target = self._read_files(spec, dt, files, spec.columns)
        touched = set(target.join(gone.select(keys), on=keys, how="semi").get_column("_file"))
        kept = target.filter(pl.col("_file").is_in(touched)).join(gone.select(keys), on=keys, how="anti")
        if not touched and data.height == 0:
            return WriteResult(spec.name, dt.version(), 0, files_scanned=scanned, files_skipped=skipped)
        version = self._commit(spec, dt, pl.concat([kept.drop("_file"), data]), mode="append",
                               removes=delta_files.removes_of(dt, sorted(touched))).version
        return WriteResult(spec.name, version, data.height, files_scanned=scanned, files_skipped=skipped)

    def scan_changes(self, spec: TableSpec, since: int) -> tuple[nw.LazyFrame, nw.LazyFrame]:
        """The rows that may have left the table since version ``since`` and the rows that may have come in:
        those of the files removed since, and those of the files added since. A row that changed is in one of
        them; a rewritten file's unchanged rows are in both (compare them to find the changes)."""
        self.lake.check_readable(spec, since)
        old, new = self.lake.delta_table_at(spec, since), self.lake.delta_table(spec)
        before, after = set(paths_of(old)), set(paths_of(new))
        gone = self._read_files(spec, old, sorted(before - after), spec.columns).drop("_file")
        came = self._read_files(spec, new, sorted(after - before), spec.columns).drop("_file")
        return nw.from_native(gone.lazy()), nw.from_native(came.lazy())

    def version(self, spec: TableSpec) -> int | None:
        return self.lake.version(spec)

    def history(self, spec: TableSpec, *, limit: int = 10) -> list[dict[str, Any]]:
        return self.lake.history(spec, limit)

    # ---------------------------------------------------------------------------------- the lake's logs
    def scan_log(self, log: LakeLog) -> nw.LazyFrame:
        """The log as a lazy frame; an empty frame with its declared schema if it was never written."""
        dt = self.lake.log_table(log.path)
        if dt is None:
            return self.from_arrow(empty_table(log.spec.schema))
        return nw.from_native(pl.scan_delta(dt).select(log.spec.schema.names))

    def append_log(self, log: LakeLog, frame: nw.LazyFrame) -> None:
        """Append ``frame``'s rows to the log in one commit (written by delta-rs, as every log is; computed here,
        as every write of this engine is)."""
        rows = frame.select(log.spec.schema.names).collect().to_arrow()
        self.lake.append_log(log.path, rows.cast(log.spec.schema))

    # -------------------------------------------------------------------------------------- internals
    def _into_existing(self, spec: TableSpec, frame: nw.LazyFrame) -> tuple[pl.DataFrame, Any, WriteResult | None]:
        """The checked rows and the table's log, for a write that changes part of a table; with a result already
        when there is nothing more to do: the table did not exist (it is created with the rows) or no rows."""
        data = self._checked(spec, frame)
        dt = self.lake.delta_table(spec)
        if dt is None:
            return data, dt, self._commit(spec, dt, data, mode="overwrite")
        if data.height == 0:
            return data, dt, WriteResult(spec.name, dt.version(), 0)
        return data, dt, None

    def _checked(self, spec: TableSpec, frame: nw.LazyFrame) -> pl.DataFrame:
        """The rows to write, checked against the table's contract (nothing unchecked is written)."""
        have = frame.collect_schema().names()
        missing = [c for c in spec.columns if c not in have]
        if missing:
            msg = f"expected columns {missing} in the rows for {spec.name!r}, got {sorted(have)}"
            raise ContractViolation(msg)
        df = frame.select(spec.columns).collect().to_native().cast(spec.polars_schema)  # type: ignore[arg-type]
        # One pass over the compiled checks (the same as on Spark); only when one fails does pandera run, for
        # its full report of failure cases.
        _, problems = count_violations(nw.from_native(df.lazy()), spec.schema)
        if problems:
            from pandera import errors as pandera_errors

            try:
                spec.schema.pandera().validate(df, lazy=True)
            except pandera_errors.SchemaErrors as exc:
                cases = exc.failure_cases.head(5).select("column", "check", "failure_case").rows()
                msg = (f"expected rows for {spec.name!r} to satisfy its contract (contracts/catalog.py); "
                       f"{exc.failure_cases.height} failure(s), first: {cases}")
                raise ContractViolation(msg) from None
            first = ", ".join(f"{col or '(table)'}: {check} x{n}" for col, check, n in problems[:5])
            msg = f"expected rows for {spec.name!r} to satisfy its contract (contracts/catalog.py); failed: {first}"
            raise ContractViolation(msg)
        return df

    def _commit(self, spec: TableSpec, dt: Any, data: pl.DataFrame, *, mode: str, removes: Sequence[Any] = (),
                partitions: dict[str, list[Any]] | None = None) -> WriteResult:
        """Write ``data``'s files (backends/polars/delta_files.py) and commit them (creating the table if need be)."""
        self.lake.prepare(spec)
        adds = delta_files.write_files(self.lake, spec, data)
        delta_files.commit(self.lake, spec, dt, adds, mode=mode, removes=removes, partitions=partitions)
        self.lake.check_features(spec)
        return WriteResult(spec.name, self.lake.written_version(spec), data.height)

    def _read_files(self, spec: TableSpec, dt: Any, files: Sequence[str], columns: Sequence[str]) -> pl.DataFrame:
        """``columns`` of the rows in the table's files ``files`` (paths as in the log), with ``_file``: the
        path each row came from. Partition values come from the log (they are not in the files)."""
        schema = {c: spec.polars_schema[c] for c in columns}
        if not files:
            return pl.DataFrame(schema={**schema, "_file": pl.Utf8})
        in_file = [c for c in columns if c not in spec.partition_by]
        base = self.lake.uri(spec).rstrip("/")
        rows = pl.scan_parquet([f"{base}/{unquote(f)}" for f in files], include_file_paths="_path",
                               hive_partitioning=False, storage_options=self.lake.storage_options or None,
                               ).select(*in_file, "_path")
        paths = pl.DataFrame({"_path": [f"{base}/{unquote(f)}" for f in files], "_file": list(files)})
        parted = [c for c in columns if c in spec.partition_by]
        if parted:
            adds = pl.from_arrow(from_stream(dt.get_add_actions(flatten=True)))  # type: ignore[union-attr]
            values = adds.select(pl.col("path").alias("_file"),  # type: ignore[union-attr]
                                 *(pl.col(f"partition.{c}").cast(spec.polars_schema[c]).alias(c) for c in parted))
            paths = paths.join(values, on="_file", how="left")
        return (rows.join(paths.lazy(), on="_path", how="left").drop("_path").select(*columns, "_file")
                .cast(schema).collect())  # type: ignore[arg-type]


def _newer(source: pl.DataFrame, target: pl.DataFrame, spec: TableSpec) -> pl.DataFrame:
    """The rows of ``source`` that win over the target row of their key: a larger ``spec.latest_by``, then a
    larger ``_record_hash`` (without ``latest_by``, every matched source row wins)."""
    if not spec.latest_by:
        return source
    lb = spec.latest_by
    theirs = target.select(*spec.keys, pl.col(lb).alias("_t_latest"), pl.col("_record_hash").alias("_t_hash"))
    joined = source.join(theirs, on=list(spec.keys), how="inner")
    wins = (pl.col(lb) > pl.col("_t_latest")) | ((pl.col(lb) == pl.col("_t_latest"))
                                                  & (pl.col("_record_hash") > pl.col("_t_hash")))
    return joined.filter(wins).drop("_t_latest", "_t_hash")


def _candidate_files(dt: Any, data: pl.DataFrame, spec: TableSpec) -> tuple[int, int, list[str]]:
    """The table's files a merge of ``data`` must read (how many, how many it skips, their paths): those in the
    partitions of ``data`` whose statistics allow one of its keys. A key column of dates, times or numbers
    prunes a file whose [min, max] misses the source's range (a timestamp maximum widened by 1 ms: delta-rs
    and Spark write them truncated to milliseconds); a file without statistics is always read."""
    adds = pl.from_arrow(from_stream(dt.get_add_actions(flatten=True)))
    if adds.height == 0:  # type: ignore[union-attr]
        return 0, 0, []
    keep = pl.lit(True)
    for c in spec.partition_by:
        keep &= pl.col(f"partition.{c}").cast(pl.Utf8).is_in(data.get_column(c).cast(pl.Utf8).unique().to_list())
    for c in spec.keys:
        dtype = spec.polars_schema[c]
        if c in spec.partition_by or not (dtype.is_temporal() or dtype.is_numeric()) or f"min.{c}" not in adds.columns:  # type: ignore[union-attr]
            continue
        low, high = data.get_column(c).min(), data.get_column(c).max()
        if low is None:
            continue
        fmin, fmax = pl.col(f"min.{c}").cast(dtype), pl.col(f"max.{c}").cast(dtype)
        if isinstance(dtype, pl.Datetime):
            fmax = fmax + pl.duration(milliseconds=1)
        keep &= (fmin.is_null() | (fmin <= pl.lit(high, dtype))) & (fmax.is_null() | (fmax >= pl.lit(low, dtype)))
    files = adds.filter(keep).get_column("path").to_list()  # type: ignore[union-attr]
    return len(files), adds.height - len(files), files  # type: ignore[union-attr]


def _partitions(data: pl.DataFrame, columns: tuple[str, ...]) -> dict[str, list[Any]]:
    return {c: data.get_column(c).unique().to_list() for c in columns}
