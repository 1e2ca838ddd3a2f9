"""The laptop engine: Polars lazy frames, Delta tables through delta-rs (``deltalake``). No JVM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import narwhals as nw
import polars as pl
import pyarrow as pa
from deltalake import ColumnProperties, WriterProperties, write_deltalake
from pandera import errors as pandera_errors

from backends import landing
from backends.expressions import with_record_hash
from backends.lake import Lake
from backends.protocol import ContractViolation, LandingRead, WriteResult
from contracts.catalog import TableSpec
from contracts.checks import count_violations
from contracts.landing import LandingEntity


class PolarsDeltaEngine:
    """Polars + delta-rs behind the engine protocol."""

    name = "polars"

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

    # ----------------------------------------------------------------------------------- landing files
    def read_landing(self, entity: LandingEntity, files: Sequence[tuple[Path, str]]) -> LandingRead:
        columns = entity.column_names
        frames: list[pl.DataFrame] = []
        rejects: list[pa.Table] = []
        refused: list[dict[str, str]] = []
        if entity.format == "jsonl":
            if files:  # every file's lines in one scan and one JSON decode: micro-batch files are many and small
                rows, bad = _read_jsonl(files, columns)
                frames.append(rows)
                rejects.append(landing.malformed_lines(bad))
        else:
            for file, label in files:
                raw = pl.read_csv(file, infer_schema=False) if entity.format == "csv" else pl.read_parquet(file)
                problem = landing.refused_file(entity, file.name, label, got={c: str(t) for c, t in raw.schema.items()},
                                               nested=lambda c, s=raw.schema: s[c].is_nested())
                if problem:
                    refused.append(problem)
                    continue
                text = raw.select([pl.col(c).cast(pl.Utf8) for c in columns])
                frames.append(text.with_columns(_source_file=pl.lit(label)))
        schema = {c: pl.Utf8 for c in (*columns, "_source_file")}
        rows = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
        hashed = with_record_hash(nw.from_native(rows.lazy()), columns)
        return LandingRead(hashed, pa.concat_tables(rejects) if rejects else landing.REJECT_SCHEMA.empty_table(),
                           landing.refused_table(refused))

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
        data = self._arrow(spec, frame)
        if data.num_rows == 0 and self.exists(spec):
            return WriteResult(spec.name, self.lake.written_version(spec), 0)
        return self._write(spec, data, mode="append")

    def overwrite(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        return self._write(spec, self._arrow(spec, frame), mode="overwrite")

    def overwrite_partitions(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult:
        """Replace exactly the partitions present in ``frame``; other partitions stay as they are."""
        if not spec.partition_by:
            msg = f"expected a partitioned table for overwrite_partitions, got {spec.name!r} (no partition columns)"
            raise ValueError(msg)
        data = self._arrow(spec, frame)
        if not self.exists(spec):
            return self._write(spec, data, mode="overwrite")
        if data.num_rows == 0:
            return WriteResult(spec.name, self.lake.written_version(spec), 0)
        predicate = _partition_values(data, spec.partition_by)  # type: ignore[arg-type]
        return self._write(spec, data, mode="overwrite", predicate=predicate)

    def merge(self, spec: TableSpec, frame: nw.LazyFrame, *, insert_only: bool = False) -> WriteResult:
        """Upsert by ``spec.keys``: the row with the larger ``spec.latest_by`` (then ``_record_hash``) wins.

        The source must hold one row per key (the caller deduplicates). With ``insert_only`` existing keys are
        left alone. Partition values of the source are added to the join predicate so delta-rs prunes files.
        """
        if not spec.keys:
            msg = f"expected business keys to merge {spec.name!r}; declare keys in contracts/catalog.py"
            raise ValueError(msg)
        data = self._arrow(spec, frame)
        dt = self.lake.delta_table(spec)
        if dt is None:
            return self._write(spec, data, mode="overwrite")
        if data.num_rows == 0:
            return WriteResult(spec.name, dt.version(), 0)
        on = [f"t.{k} = s.{k}" for k in spec.keys]
        scanned, skipped = _files_in_partitions(dt, data, spec.partition_by)
        if spec.partition_by and scanned == 0 or not spec.partition_by and not _any_key_in(dt, data, spec):
            # The merge could only insert (every partition of the source is new, or no source key is in the
            # target, e.g. new versions of a history table): append, with no join and no file rewritten.
            appended = self._write(spec, data, mode="append")
            return WriteResult(spec.name, appended.version, appended.rows, files_scanned=0,
                               files_skipped=skipped + (0 if spec.partition_by else scanned))
        if spec.partition_by:
            on.append(_partition_values(data, spec.partition_by, alias="t"))  # type: ignore[arg-type]
        merger = dt.merge(data, predicate=" AND ".join(on), source_alias="s", target_alias="t",
                          error_on_type_mismatch=False, writer_properties=writer_properties(spec))
        if not insert_only:
            newer = None
            if spec.latest_by:
                lb = spec.latest_by
                newer = f"s.{lb} > t.{lb} OR (s.{lb} = t.{lb} AND s._record_hash > t._record_hash)"
            merger = merger.when_matched_update_all(predicate=newer)
        metrics = merger.when_not_matched_insert_all().execute()
        written = int(metrics.get("num_target_rows_inserted", 0)) + int(metrics.get("num_target_rows_updated", 0))
        return WriteResult(spec.name, self.lake.written_version(spec), written, files_scanned=scanned,
                           files_skipped=skipped)

    def version(self, spec: TableSpec) -> int | None:
        return self.lake.version(spec)

    def history(self, spec: TableSpec, *, limit: int = 10) -> list[dict[str, Any]]:
        return self.lake.history(spec, limit)

    # -------------------------------------------------------------------------------------- internals
    def _arrow(self, spec: TableSpec, frame: nw.LazyFrame) -> pa.Table:
        """The rows to write, checked against the table's pandera contract (nothing unchecked is written)."""
        df = frame.select(spec.columns).collect().to_native().cast(spec.polars_schema)  # type: ignore[arg-type]
        # One pass over the compiled checks (the same as on Spark); only when one fails does pandera run, for
        # its full report of failure cases.
        _, problems = count_violations(nw.from_native(df.lazy()), spec.schema)
        if problems:
            try:
                spec.schema.validate(df, lazy=True)
            except pandera_errors.SchemaErrors as exc:
                cases = exc.failure_cases.head(5).select("column", "check", "failure_case").rows()
                msg = (f"expected rows for {spec.name!r} to satisfy its contract (contracts/catalog.py); "
                       f"{exc.failure_cases.height} failure(s), first: {cases}")
                raise ContractViolation(msg) from None
            first = ", ".join(f"{col or '(table)'}: {check} x{n}" for col, check, n in problems[:5])
            msg = f"expected rows for {spec.name!r} to satisfy its contract (contracts/catalog.py); failed: {first}"
            raise ContractViolation(msg)
        return df.to_arrow().cast(spec.arrow_schema)

    def _write(self, spec: TableSpec, data: pa.Table, *, mode: str, predicate: str | None = None) -> WriteResult:
        self.lake.prepare(spec)
        write_deltalake(
            self.lake.delta_table(spec) or self.lake.uri(spec), data, mode=mode, partition_by=list(spec.partition_by) or None,  # type: ignore[arg-type]
            predicate=predicate, storage_options=self.lake.storage_options or None,
            configuration=self.lake.table_configuration, writer_properties=writer_properties(spec),
        )
        self.lake.check_features(spec)
        return WriteResult(spec.name, self.lake.written_version(spec), data.num_rows)


def digest_columns(spec: TableSpec) -> list[str]:
    """The columns of random digests, (nearly) unique per row: record hashes, HMACs, and a surrogate key that is
    the table's own key (``customer_sk`` of dim_customer; in the fact it repeats and is not listed)."""
    own_key = spec.keys if len(spec.keys) == 1 else ()
    return [c for c in spec.columns
            if c == "_record_hash" or c.endswith("_hmac") or (c in own_key and c.endswith("_sk"))]


def writer_properties(spec: TableSpec) -> WriterProperties:
    """Parquet writer settings for ``spec``: ZSTD level 1, and no dictionary encoding for its digest columns.

    ZSTD at level 1 writes about as fast as delta-rs' default (Snappy) and makes files a third to a half smaller:
    Snappy barely compresses hex digests. A dictionary of random unique values never pays: the writer builds
    one, finds it too large and falls back to plain encoding. (Identifiers such as ``O000923798`` keep theirs:
    in a partition's small files it makes them smaller.) ``make bench-writes`` (bench/parquet_writes.py)
    measures both settings per table."""
    off = ColumnProperties(dictionary_enabled=False)
    return WriterProperties(compression="ZSTD", compression_level=1,
                            column_properties={c: off for c in digest_columns(spec)})


def _files_in_partitions(dt: Any, data: pa.Table, columns: tuple[str, ...]) -> tuple[int, int]:
    """How many of the table's files lie in the partitions of ``data`` (a merge reads them) and how many not
    (its predicate skips them); every file is read when the table is not partitioned."""
    adds = pl.from_arrow(pa.table(dt.get_add_actions(flatten=True)))
    if not columns or adds.height == 0:  # type: ignore[union-attr]
        return adds.height, 0  # type: ignore[union-attr]
    source = pl.from_arrow(data)
    inside = pl.all_horizontal(  # type: ignore[union-attr]
        pl.col(f"partition.{c}").cast(pl.Utf8).is_in(source.get_column(c).cast(pl.Utf8).unique().to_list())  # type: ignore[union-attr]
        for c in columns)
    scanned = adds.filter(inside).height  # type: ignore[union-attr]
    return scanned, adds.height - scanned  # type: ignore[union-attr]


def _any_key_in(dt: Any, data: pa.Table, spec: TableSpec) -> bool:
    """Whether some row of ``data`` has a key the table already holds (only the key columns are read). Null keys
    never match, as in the merge's join."""
    keys = list(spec.keys)
    source = pl.from_arrow(data).lazy().select(keys).drop_nulls()  # type: ignore[union-attr]
    target = pl.scan_delta(dt).select(keys).cast({k: spec.polars_schema[k] for k in keys})  # type: ignore[arg-type]
    return source.join(target, on=keys, how="semi").head(1).collect().height > 0


def _partition_values(data: pa.Table, columns: tuple[str, ...], alias: str | None = None) -> str:
    df = pl.from_arrow(data)
    return landing.partition_predicate({c: df.get_column(c).unique().to_list() for c in columns}, alias)  # type: ignore[union-attr]


def _read_jsonl(files: Sequence[tuple[Path, str]], columns: list[str]) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """JSON lines as text columns plus ``_source_file``; lines that are not a JSON object become rejects (with
    the raw line and its file).

    Fast path: lines shaped like an object are decoded in one go by Polars; only when that fails (a value that
    is not text, a broken line that still looks like an object) is every line probed on its own.
    """
    labels = {str(path): label for path, label in files}
    lines = (
        pl.scan_csv([p for p, _ in files], has_header=False, separator="\x01", quote_char=None,
                    schema={"_line": pl.Utf8}, include_file_paths="_path")
        .with_columns(pl.col("_line").str.strip_chars(),
                      pl.col("_path").replace_strict(labels, return_dtype=pl.Utf8).alias("_source_file"))
        .drop("_path")
        .filter(pl.col("_line") != "")
        .collect()
    )
    shaped = pl.col("_line").str.starts_with("{") & pl.col("_line").str.ends_with("}")
    candidates, others = lines.filter(shaped), lines.filter(~shaped)
    bad = [(line, label) for line, label in others.select("_line", "_source_file").rows() if not _is_json_object(line)]
    try:
        payload = "\n".join(candidates.get_column("_line").to_list()).encode()
        good = pl.read_ndjson(payload, schema={c: pl.Utf8 for c in columns}) if payload else None
        if good is not None and good.height != candidates.height:
            raise ValueError("row count changed while decoding")
        good = good if good is not None else pl.DataFrame(schema={c: pl.Utf8 for c in columns})
        good = good.with_columns(candidates.get_column("_source_file"))
        good_others = others.filter(~pl.col("_line").is_in([line for line, _ in bad]))
        if good_others.height:  # e.g. an object with trailing spaces inside quotes; decode one by one
            good = pl.concat([good, _probe_lines(good_others, columns).drop("_line")])
    except Exception:  # noqa: BLE001 - any decoding problem sends the batch down the line-by-line path
        good = _probe_lines(lines, columns)
        suspect = good.filter(pl.all_horizontal(pl.col(c).is_null() for c in columns))
        bad = [(line, label) for line, label in suspect.select("_line", "_source_file").rows()
               if not _is_json_object(line)]
        good = good.filter(~pl.col("_line").is_in([line for line, _ in bad])) if bad else good
        good = good.drop("_line")
    return good.select(*columns, "_source_file"), bad


def _probe_lines(lines: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Each line's fields by JSON path (a line that does not parse yields nulls); keeps ``_line``."""
    return lines.with_columns(pl.col("_line").str.json_path_match(f"$.{c}").alias(c) for c in columns)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False

