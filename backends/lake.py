"""Where the lake is: the root (a folder or ``s3://bucket/prefix``) and how to reach it.

Table locations are the catalog's relative paths under this root; this is the one place they are joined.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse.backends.protocol import TableNotFoundError
from lakehouse.contracts.catalog import TableSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    from deltalake import DeltaTable


class LakeNotWritableError(OSError):
    """The lake root cannot be created or written."""


class UnportableTableError(RuntimeError):
    """A table uses a Delta feature that not every engine of the project reads."""


# Every table must be readable by delta-rs (laptop), Sail and delta-spark (EMR): these features are refused.
UNPORTABLE_FEATURES = frozenset({"deletionVectors", "columnMapping", "v2Checkpoint", "icebergCompatV1",
                                 "icebergCompatV2", "typeWidening", "variantType"})
# Table properties set when a table is created: no engine turns those features on by default, and a checkpoint
# every 10 commits (not the default 100) keeps loading a log cheap: a daily table is read from a checkpoint and at
# most 9 JSON commits (about 6 ms instead of 14 ms for 30 commits), and a day loads some 45 logs.
PORTABLE_TABLE_PROPERTIES: dict[str, str | None] = {"delta.enableDeletionVectors": "false",
                                                    "delta.checkpointInterval": "10"}


# Delta logs loaded in this process, by (table URI, version; None: the latest). The latest is brought up to date
# (a stat, or ``update_incremental`` for new commits) instead of loaded again (~13 ms on a 30-commit log); a
# day of the flow loads tables ~100 times.
_LOADED: dict[tuple[str, int | None], tuple[DeltaTable, int, int | None]] = {}
_LOADED_LOCK = threading.RLock()
_MAX_SNAPSHOTS = 64  # logs loaded at an older version (release audits, publishes): keys (uri, version)


@functools.lru_cache(maxsize=64)
def _resolved(root: str, cwd: str) -> Path:
    """``root`` made absolute (from ``cwd``) with its links followed; a day asks for it ~860 times (0.2 s under cProfile)."""
    del cwd  # part of the cache key only: a relative root is resolved from the current folder
    return Path(root).resolve()


@dataclass(frozen=True)
class Lake:
    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    table_configuration: dict[str, str | None] | None = field(default_factory=lambda: dict(PORTABLE_TABLE_PROPERTIES))

    def __post_init__(self) -> None:
        asked = {k: v for k, v in (self.table_configuration or {}).items() if v is not None}
        turned_on = [k for k in ("delta.enableDeletionVectors",) if asked.get(k, "false").lower() == "true"]
        if asked.get("delta.columnMapping.mode", "none") != "none":
            turned_on.append("delta.columnMapping.mode")
        if turned_on:
            msg = (f"expected table properties every engine reads, got {turned_on} turned on; deletion vectors and "
                   "column mapping are not read by every engine of the project (leave them off)")
            raise UnportableTableError(msg)

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    @property
    def local_root(self) -> Path:
        return _resolved(self.root.removeprefix("file://"), os.getcwd())

    def uri(self, spec: TableSpec) -> str:
        return self.path_uri(spec.path)

    def path_uri(self, relative: str) -> str:
        """``relative`` (a path under the root, e.g. ``_releases/gold``) as a URI or local path."""
        if self.is_local:
            return str(self.local_root / relative)
        return f"{self.root.rstrip('/')}/{relative}"

    def check_writable(self) -> None:
        """Fail early, naming the root, when a local lake cannot be written or an S3 lake's bucket cannot be
        reached (:meth:`check_reachable`)."""
        if not self.is_local:
            self.check_reachable()
            return
        root = self.local_root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"expected a writable lake root, got {str(root)!r} ({exc.strerror}); pass --lake-root or set LAKEHOUSE_LAKE_ROOT"
            raise LakeNotWritableError(msg) from exc
        if not os.access(root, os.W_OK | os.X_OK):
            msg = f"expected a writable lake root, got {str(root)!r} (permission denied); pass --lake-root or set LAKEHOUSE_LAKE_ROOT"
            raise LakeNotWritableError(msg)

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """For an ``s3://`` root: the bucket answers a HEAD with the credentials at hand, within seconds
        (short timeouts, one retry), or a LakeNotWritableError says which root and what to check."""
        from lakehouse.backends.storage import UnreachableRootError, check_bucket

        try:
            check_bucket(self.root, "lake root", "pass --lake-root or set LAKEHOUSE_LAKE_ROOT", timeout_s)
        except UnreachableRootError as exc:
            raise LakeNotWritableError(str(exc)) from None

    def prepare(self, spec: TableSpec) -> None:
        if self.is_local:
            self.check_writable()
            Path(self.uri(spec)).mkdir(parents=True, exist_ok=True)

    # The lake's own logs (releases, ledger, ...): Delta tables under the root, written with delta-rs whichever
    # engine writes the data tables (the replays log is appended by the engine); each append is one atomic commit.
    def log_table(self, relative: str) -> DeltaTable | None:
        """The log at ``relative`` as loaded in this process (None: never written), for an engine to scan."""
        return self._loaded_table(self.path_uri(relative))

    def read_log(self, relative: str) -> pa.Table | None:
        dt = self.log_table(relative)
        if dt is None:
            return None
        import polars as pl

        # Polars reads a log's many small files (one per run) about 3x faster than to_pyarrow_table (8 vs 24 ms
        # for 30 files); a day reads some 25 logs. Strings come back as large_string: callers read values.
        return pl.scan_delta(dt).collect().to_arrow()

    def log_rows(self, relative: str) -> list[dict[str, Any]]:
        """Every row of the log at ``relative`` as a dict of Python values (empty: never written)."""
        dt = self.log_table(relative)
        if dt is None:
            return []
        # A run has Polars loaded: it reads a log's many small files ~2x faster. A command that only reads the
        # lake's metadata (tables, status, releases) does not import Polars or pyarrow for it (0.3-0.5 s).
        return log_rows_polars(dt) if "polars" in sys.modules else log_rows_delta_rs(dt)

    # Plain objects under the root (lineage event files): a local file, or an S3 object (boto3, standard chain).
    def write_bytes(self, relative: str, data: bytes) -> None:
        if self.is_local:
            path = self.local_root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            bucket, key = self.s3_key(relative)
            self.s3().put_object(Bucket=bucket, Key=key, Body=data)

    def list_files(self, relative: str) -> list[str]:
        """Paths (relative to the root) of the files under folder ``relative``, sorted."""
        if self.is_local:
            folder = self.local_root / relative
            return sorted(p.relative_to(self.local_root).as_posix() for p in folder.rglob("*") if p.is_file()) \
                if folder.is_dir() else []
        bucket, key = self.s3_key(relative)
        prefix = key.rstrip("/") + "/"
        root_key = self.s3_key("")[1]
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"][len(root_key):].lstrip("/") for page in pages for o in page.get("Contents", []))

    def remove_folder(self, relative: str) -> None:
        """Delete folder ``relative`` under the root and everything in it (nothing if it is not there)."""
        if self.is_local:
            import shutil

            shutil.rmtree(self.local_root / relative, ignore_errors=True)
            return
        bucket, key = self.s3_key(relative)
        client = self.s3()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                         "Quiet": True})

    def read_bytes(self, relative: str) -> bytes:
        if self.is_local:
            return (self.local_root / relative).read_bytes()
        bucket, key = self.s3_key(relative)
        return self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def s3_key(self, relative: str) -> tuple[str, str]:
        """(bucket, key) of ``relative`` under an S3 root."""
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, "/".join(p for p in (prefix.strip("/"), relative.strip("/")) if p)

    @staticmethod
    def s3() -> Any:
        """A boto3 S3 client (standard credential chain)."""
        import boto3

        return boto3.client("s3")

    def append_log(self, relative: str, rows: pa.Table) -> None:
        from deltalake import write_deltalake

        if self.is_local:
            self.check_writable()
        uri = self.path_uri(relative)
        # The log as this process loaded it (read_log usually just did): delta-rs would load it again from a URI.
        # A log written by an older release may lack a column added since: it is added (older rows hold null).
        write_deltalake(self._loaded_table(uri) or uri, rows, mode="append", schema_mode="merge",
                        storage_options=self.storage_options or None, configuration=PORTABLE_TABLE_PROPERTIES)

    # Table metadata is read with delta-rs whichever engine wrote the table (the Delta log is the same).
    def delta_table(self, spec: TableSpec) -> DeltaTable | None:
        return self._loaded_table(self.uri(spec))

    def delta_table_at(self, spec: TableSpec, version: int) -> DeltaTable:
        """The table's log at ``version`` (a snapshot: loaded once per process, like the latest one)."""
        latest = self.delta_table(spec)
        if latest is not None and latest.version() == version:
            return latest
        dt = self._loaded_table(self.uri(spec), version)
        assert dt is not None, (spec.name, version)  # check_readable said the version exists
        return dt

    def _loaded_table(self, uri: str, version: int | None = None) -> DeltaTable | None:
        """The table's Delta log as loaded in this process: the latest, brought up to date, or a snapshot at
        ``version``; None if there is no table."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

        with _LOADED_LOCK:
            cached = _LOADED.get((uri, version))
            if cached is not None and self._commit_stamp(uri, cached[1]) == cached[2]:
                dt = cached[0]
                if version is not None or (
                        self.is_local and not Path(uri, "_delta_log", f"{dt.version() + 1:020d}.json").exists()):
                    return dt  # a snapshot, or no commit since: the log is current (a stat instead of ~3 ms)
                dt.update_incremental()
            else:
                try:
                    dt = DeltaTable(uri, version=version, storage_options=self.storage_options or None)
                except DeltaTableNotFound:
                    _LOADED.pop((uri, version), None)
                    return None
            _LOADED[(uri, version)] = (dt, dt.version(), self._commit_stamp(uri, dt.version()))
            snapshots = [k for k in _LOADED if k[1] is not None]
            for oldest in snapshots[:-_MAX_SNAPSHOTS]:  # a long backfill reads many; keep the newest few
                del _LOADED[oldest]
            return dt

    def _commit_stamp(self, uri: str, version: int) -> int | None:
        """When commit ``version`` of a local table was written: a table deleted and written anew since it was
        cached starts its log again, and its commit files differ (None on object stores, where tables are
        not deleted under a running flow)."""
        if not self.is_local:
            return None
        try:
            return Path(uri, "_delta_log", f"{version:020d}.json").stat().st_mtime_ns
        except FileNotFoundError:
            return -1

    def record_batches(self, spec: TableSpec, version: int, *,
                       batch_rows: int = 65_536) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Table ``spec`` at ``version`` as a schema and a stream of Arrow record batches (read with delta-rs
        whichever engine wrote it; the table is never materialised whole)."""
        dataset = self.delta_table_at(spec, version).to_pyarrow_dataset()
        return dataset.schema, iter(dataset.to_batches(batch_size=batch_rows))

    def version(self, spec: TableSpec) -> int | None:
        dt = self.delta_table(spec)
        return None if dt is None else dt.version()

    def row_count(self, spec: TableSpec, version: int | None = None) -> int | None:
        """Rows of table ``spec`` at ``version`` (the latest when None) from the row counts the Delta log keeps
        for each data file, without reading data; None when the table does not exist or a file has no count."""
        dt = self.delta_table(spec) if version is None else self.delta_table_at(spec, version)
        if dt is None:
            return None
        adds = dt.get_add_actions(flatten=False)  # an Arrow table of delta-rs's own (pa.table would import pandas)
        if "num_records" not in adds.column_names:
            return None
        counts = adds.column("num_records").to_pylist()
        return None if None in counts else sum(counts)

    def written_version(self, spec: TableSpec) -> int:
        """The version of a table that was just written (an error if it does not exist)."""
        version = self.version(spec)
        if version is None:
            msg = f"expected table {spec.name!r} at {self.uri(spec)} after writing it, found none"
            raise TableNotFoundError(msg)
        return version

    def history(self, spec: TableSpec, limit: int = 10) -> list[dict[str, Any]]:
        dt = self.delta_table(spec)
        return [] if dt is None else dt.history(limit)

    def newest_partition(self, spec: TableSpec, column: str) -> str | None:
        """The largest value of partition column ``column`` among the table's files, from the Delta log alone
        (as text; None when the table does not exist or is empty)."""
        dt = self.delta_table(spec)
        if dt is None:
            return None
        from lakehouse.backends.arrow_rows import from_stream

        adds = from_stream(dt.get_add_actions(flatten=True))
        values = [v for v in adds.column(f"partition.{column}").to_pylist() if v is not None]
        return str(max(values)) if values else None

    def files_through(self, spec: TableSpec, column: str, last: str) -> list[str]:
        """The paths of the table's files whose partition ``column`` is at most ``last`` (ISO dates compare as
        text), from the Delta log alone; empty when the table does not exist."""
        dt = self.delta_table(spec)
        if dt is None:
            return []
        from lakehouse.backends.arrow_rows import from_stream

        adds = from_stream(dt.get_add_actions(flatten=True))
        values = adds.column(f"partition.{column}").to_pylist()
        return sorted(p for p, v in zip(adds.column("path").to_pylist(), values, strict=True)
                      if v is not None and str(v) <= last)

    def check_readable(self, spec: TableSpec, version: int | None) -> bool:
        """Whether ``spec`` exists; a clear error when ``version`` is asked of a table that lacks it."""
        current = self.version(spec)
        if current is None:
            if version is not None:
                msg = (f"expected table {spec.name!r} to exist at {self.uri(spec)} to read version {version}; "
                       "it was never written")
                raise TableNotFoundError(msg)
            return False
        if version is not None and not 0 <= version <= current:
            msg = f"expected a version of {spec.name!r} between 0 and {current}, got {version!r}"
            raise TableNotFoundError(msg)
        return True

    def readable_version(self, spec: TableSpec, version: int) -> bool:
        """Whether version ``version`` of ``spec`` can still be loaded: delta-rs drops the log files of versions
        older than the table's log retention (30 days by default) once a checkpoint follows them."""
        from deltalake.exceptions import DeltaError

        latest = self.delta_table(spec)
        if latest is not None and latest.version() == version:
            return True  # the latest, already loaded
        try:
            return self._loaded_table(self.uri(spec), version) is not None
        except DeltaError:
            return False

    def unreferenced_files(self, spec: TableSpec, *, retention_hours: float, keep_versions: list[int]) -> list[str]:
        """The files of ``spec`` (paths relative to the table) that no version reads any more: removed from the
        table more than ``retention_hours`` ago, or never committed (a killed write's) and older than that, and not
        part of any version in ``keep_versions`` (delta-rs' full vacuum, listing only). Empty when the table does not exist."""
        dt = self.delta_table(spec)
        if dt is None:
            return []
        # A dry run lists what a vacuum would delete without committing to a log another engine may write;
        # the retention is this project's setting (vacuum_retention_hours), not the table property's floor.
        # full=True: also the files no log version ever named (a write killed before its commit), by their age.
        listed = dt.vacuum(retention_hours=math.ceil(retention_hours), dry_run=True, full=True,
                           enforce_retention_duration=False, keep_versions=sorted(keep_versions) or None)
        # Only files inside the table's folder: a log may name absolute paths (a shallow clone's), never deleted.
        return sorted(p for p in listed if "://" not in p and not p.startswith("/") and ".." not in p.split("/"))

    def sizes_of(self, spec: TableSpec, paths: list[str]) -> dict[str, int]:
        """The files among ``paths`` (relative to the table, as the log names them) that are there: their bytes."""
        from urllib.parse import unquote

        if self.is_local:
            folder = Path(self.uri(spec))
            found = {}
            for path in paths:
                try:
                    found[path] = (folder / unquote(path)).stat().st_size
                except FileNotFoundError:
                    continue
            return found
        bucket, key = self.s3_key(spec.path)
        prefix = key.rstrip("/") + "/"
        sizes = {o["Key"].removeprefix(prefix): o["Size"] for page in self.s3().get_paginator(
            "list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])}
        return {p: sizes[unquote(p)] for p in paths if unquote(p) in sizes}

    def delete_files(self, spec: TableSpec, paths: list[str]) -> None:
        """Delete files of ``spec`` (paths relative to the table, as the log names them)."""
        from urllib.parse import unquote

        if self.is_local:
            folder = Path(self.uri(spec))
            for path in paths:
                (folder / unquote(path)).unlink(missing_ok=True)
            return
        bucket, key = self.s3_key(spec.path)
        keys = [f"{key.rstrip('/')}/{unquote(p)}" for p in paths]
        client = self.s3()
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                         "Quiet": True})

    def missing_files(self, spec: TableSpec, version: int) -> list[str]:
        """Files that version ``version`` of ``spec`` reads and that are no longer there (vacuumed)."""
        files = paths_of(self.delta_table_at(spec, version))
        present = self.sizes_of(spec, files)
        return [f for f in files if f not in present]

    def check_features(self, spec: TableSpec) -> None:
        """Refuse a table whose protocol needs a feature one of the engines cannot read."""
        dt = self.delta_table(spec)
        assert dt is not None, spec.name
        protocol = dt.protocol()
        used = set(protocol.reader_features or ()) | set(protocol.writer_features or ())
        bad = sorted(used & UNPORTABLE_FEATURES)
        if bad:
            msg = (f"expected {spec.name} ({self.uri(spec)}) to use only Delta features every engine reads, "
                   f"got {bad}; recreate it without them (see backends/lake.py PORTABLE_TABLE_PROPERTIES)")
            raise UnportableTableError(msg)


def paths_of(dt: DeltaTable) -> list[str]:
    """The paths (as in the log) of the table's files at ``dt``'s version."""
    from lakehouse.backends.arrow_rows import from_stream

    return from_stream(dt.get_add_actions(flatten=False)).column("path").to_pylist()


def log_rows_polars(dt: DeltaTable) -> list[dict[str, Any]]:
    """A lake log's rows, read by Polars."""
    import polars as pl

    return pl.scan_delta(dt).collect().to_dicts()


def log_rows_delta_rs(dt: DeltaTable) -> list[dict[str, Any]]:
    """A lake log's rows, read by delta-rs's own query engine into its Arrow (arro3): no Polars, no pyarrow."""
    from deltalake import QueryBuilder

    data = QueryBuilder().register("log", dt).execute("SELECT * FROM log").read_all()
    columns = [data.column(n).to_pylist() for n in data.column_names]
    return [dict(zip(data.column_names, values, strict=True)) for values in zip(*columns, strict=True)]
