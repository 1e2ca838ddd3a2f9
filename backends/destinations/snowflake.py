"""Snowflake, where gold is published: the Arrow → Snowflake type mapping (declared once, here), the
connection, and the load of one table.

The load of a released gold table (``load_table``), in the order it runs:

1. ``ensure_table``: the target is created when missing; a gold column it lacks is added
   (``ALTER TABLE ... ADD COLUMN``); a column it has that gold dropped or retyped fails with
   ``SchemaDriftError`` before anything is written.
2. ``stage``: the table's Arrow record batches are written to Parquet files of at most ``stage_file_rows``
   rows, put on the stage of a staging table ``<TABLE>__STAGE`` (created afresh) and loaded with
   ``COPY INTO`` (bulk; the table is never held whole in memory, and no row is inserted one by one).
3. ``merge_staged``: one transaction deletes the target rows whose key the release no longer has, MERGEs
   the staging rows deduplicated by key (``QUALIFY ROW_NUMBER() = 1`` over every column, so the MERGE is
   deterministic) and records the load-audit row of the batch. A batch already in the audit is skipped
   by the caller (``loaded``); a crash before the commit leaves the target as it was.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

    from lakehouse.backends.lake import Lake
    from lakehouse.contracts.catalog import TableSpec
    from lakehouse.deployments.settings import SnowflakeConnection as SnowflakeSettings

AUDIT_TABLE = "LAKEHOUSE_LOAD_AUDIT"
STAGE_SUFFIX = "__STAGE"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StaleReleaseError(ValueError):
    """The release is older than one already merged into the target."""


class SchemaDriftError(ValueError):
    """The Snowflake target has a column gold no longer has, or one of another type."""


class UnsupportedTypeError(TypeError):
    """A gold column has an Arrow type the mapping does not declare."""


@dataclass(frozen=True)
class SnowflakeType:
    ddl: str  # as written in CREATE TABLE / ALTER TABLE
    reported: str  # as INFORMATION_SCHEMA.COLUMNS.DATA_TYPE reports it
    scale: int | None = None  # NUMBER only


# The one mapping from Arrow (what Delta tables are read as) to Snowflake column types; the first match wins.
ARROW_TO_SNOWFLAKE: tuple[tuple[Callable[[pa.DataType], bool], Callable[[pa.DataType], SnowflakeType]], ...] = (
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
     lambda t: SnowflakeType("VARCHAR", "TEXT")),
    (pa.types.is_integer, lambda t: SnowflakeType("NUMBER(38,0)", "NUMBER", 0)),
    (pa.types.is_decimal, lambda t: SnowflakeType(f"NUMBER({t.precision},{t.scale})", "NUMBER", t.scale)),
    (pa.types.is_floating, lambda t: SnowflakeType("FLOAT", "FLOAT")),
    (pa.types.is_boolean, lambda t: SnowflakeType("BOOLEAN", "BOOLEAN")),
    (pa.types.is_date, lambda t: SnowflakeType("DATE", "DATE")),
    (lambda t: pa.types.is_timestamp(t) and t.tz is not None, lambda t: SnowflakeType("TIMESTAMP_TZ", "TIMESTAMP_TZ")),
    (pa.types.is_timestamp, lambda t: SnowflakeType("TIMESTAMP_NTZ", "TIMESTAMP_NTZ")),
)


def snowflake_type(field: pa.Field, table_name: str) -> SnowflakeType:
    for matches, mapped in ARROW_TO_SNOWFLAKE:
        if matches(field.type):
            return mapped(field.type)
    msg = (f"expected a column type with a Snowflake mapping for {table_name}.{field.name}, got {field.type}; "
           "declare it in backends/destinations/snowflake.py ARROW_TO_SNOWFLAKE")
    raise UnsupportedTypeError(msg)


def ident(name: str) -> str:
    """A lake name (``dim_customer``, ``gold.dim_customer``) as an unquoted Snowflake identifier."""
    bare = name.rsplit(".", 1)[-1]
    if not _IDENT.match(bare):
        msg = f"expected a table or column name of letters, digits and underscores, got {name!r}"
        raise ValueError(msg)
    return bare.upper()


def connect(settings: SnowflakeSettings, secret: SecretStr, *, create_schema: bool = True) -> SnowflakeConnection:
    """A connection to the database and schema of ``settings`` (the publish target's schema is created if
    missing; a source's, ``create_schema=False``, must exist)."""
    import snowflake.connector

    auth: dict[str, Any]
    if settings.authenticator == "key_pair":
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(secret.get_secret_value().encode(), password=None)
        auth = {"authenticator": "SNOWFLAKE_JWT", "private_key": key}
    else:
        auth = {"password": secret.get_secret_value()}
    optional = {k: v for k, v in {"host": settings.host, "warehouse": settings.warehouse or None,
                                  "role": settings.role or None}.items() if v}
    conn = snowflake.connector.connect(
        account=settings.account, user=settings.user, port=settings.port, protocol=settings.protocol,
        login_timeout=settings.login_timeout, network_timeout=settings.network_timeout,
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}, **auth, **optional)
    database, schema = ident(settings.database), ident(settings.schema_)
    cur = conn.cursor()
    cur.execute(f"USE DATABASE {database}")
    # Created only when missing: a role that may write the schema need not be allowed to create schemas.
    if create_schema and not cur.execute("SELECT COUNT(*) FROM INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = %s",
                                         (schema,)).fetchone()[0]:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {database}.{schema}")
    cur.execute(f"USE SCHEMA {database}.{schema}")
    return conn


def ensure_audit(cur: SnowflakeCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (BATCH_ID VARCHAR NOT NULL, RELEASE_ID VARCHAR NOT NULL, "
                "TABLE_NAME VARCHAR NOT NULL, DELTA_VERSION NUMBER(38,0) NOT NULL, ROWS_STAGED NUMBER(38,0), "
                "ROWS_INSERTED NUMBER(38,0), ROWS_UPDATED NUMBER(38,0), ROWS_DELETED NUMBER(38,0), "
                "RUN_ID VARCHAR, LOADED_AT TIMESTAMP_TZ)")


def loaded(cur: SnowflakeCursor, batch_id: str) -> bool:
    """Whether the batch was merged already (its audit row commits with the MERGE)."""
    return bool(cur.execute(f"SELECT COUNT(*) FROM {AUDIT_TABLE} WHERE BATCH_ID = %s", (batch_id,)).fetchone()[0])


def newest_release(cur: SnowflakeCursor, table_name: str) -> str | None:
    """The newest release of ``table_name`` merged into the target (release ids sort by sequence)."""
    return cur.execute(f"SELECT MAX(RELEASE_ID) FROM {AUDIT_TABLE} WHERE TABLE_NAME = %s", (table_name,)).fetchone()[0]


def target_columns(cur: SnowflakeCursor, table_name: str) -> dict[str, tuple[str, int | None]] | None:
    """The target's columns (name → reported type, scale), or None when it does not exist."""
    rows = cur.execute("SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_SCALE FROM INFORMATION_SCHEMA.COLUMNS "
                       "WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                       (ident(table_name),)).fetchall()
    return {r[0].upper(): (r[1].upper(), None if r[2] is None else int(r[2])) for r in rows} or None


def ensure_table(cur: SnowflakeCursor, table_name: str, schema: pa.Schema, keys: Iterable[str]) -> list[str]:
    """Create the target when missing, or add to it the columns gold gained (their names are returned).
    A column gold dropped or retyped raises ``SchemaDriftError`` and changes nothing."""
    name = ident(table_name)
    wanted = {ident(f.name): snowflake_type(f, table_name) for f in schema}
    existing = target_columns(cur, table_name)
    if existing is None:
        key_cols = {ident(k) for k in keys}
        cols = ", ".join(f"{c} {t.ddl}{' NOT NULL' if c in key_cols else ''}" for c, t in wanted.items())
        cur.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
        return []
    dropped = [c for c in existing if c not in wanted]

    def found(c: str) -> tuple[str, int | None]:  # the scale counts for NUMBER only
        kind, scale = existing[c]
        return kind, scale if wanted[c].scale is not None else None

    retyped = [f"{c} is {existing[c][0]}, gold has {t.ddl}" for c, t in wanted.items()
               if c in existing and found(c) != (t.reported, t.scale)]
    if dropped or retyped:
        problems = ([f"columns {dropped} are not in gold any more"] if dropped else []) + retyped
        msg = (f"expected Snowflake table {name} to match {table_name} of the release, got: {'; '.join(problems)}; "
               "nothing was published to it: migrate the target by hand (rename or drop the column, or recreate "
               "the table) and publish again")
        raise SchemaDriftError(msg)
    added = [c for c in wanted if c not in existing]
    for c in added:
        cur.execute(f"ALTER TABLE {name} ADD COLUMN {c} {wanted[c].ddl}")
    return added


def stage(cur: SnowflakeCursor, table_name: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], *,
          file_rows: int) -> int:
    """Load ``batches`` into a fresh staging table through Parquet files on its stage; the rows staged."""
    name = ident(table_name) + STAGE_SUFFIX
    cols = ", ".join(f"{ident(f.name)} {snowflake_type(f, table_name).ddl}" for f in schema)
    cur.execute(f"CREATE OR REPLACE TRANSIENT TABLE {name} ({cols})")
    with tempfile.TemporaryDirectory(prefix="lakehouse-stage-") as tmp:
        files = _parquet_files(Path(tmp), schema, batches, file_rows)
        if not files:
            return 0
        cur.execute(f"PUT 'file://{Path(tmp).as_posix()}/*.parquet' @%{name} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
    result = cur.execute(f"COPY INTO {name} FROM @%{name} FILE_FORMAT = (TYPE = PARQUET) "
                         "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE").fetchall()
    failed = [r for r in result if str(r[1]).upper() != "LOADED"]
    if failed:
        msg = f"expected every staged file of {table_name} to load, got {failed}"
        raise RuntimeError(msg)
    return sum(int(r[3]) for r in result)


def _parquet_files(folder: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch], file_rows: int) -> list[Path]:
    files: list[Path] = []
    writer: pq.ParquetWriter | None = None
    rows_in_file = 0
    try:
        for batch in _split(batches, file_rows):
            if writer is None or rows_in_file + batch.num_rows > file_rows:
                if writer is not None:
                    writer.close()
                files.append(folder / f"part-{len(files):05d}.parquet")
                writer, rows_in_file = pq.ParquetWriter(files[-1], schema), 0
            writer.write_batch(batch)
            rows_in_file += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return files


def _split(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


@dataclass(frozen=True)
class Audit:
    batch_id: str
    release_id: str
    table: str
    version: int
    rows_staged: int
    run_id: str


def merge_staged(cur: SnowflakeCursor, table_name: str, schema: pa.Schema, keys: Iterable[str],
                 audit: Audit) -> dict[str, int]:
    """In one transaction: drop target rows whose key the release lacks, MERGE the deduplicated staging rows,
    record the audit row. Returns rows inserted, updated and deleted."""
    name, staged = ident(table_name), ident(table_name) + STAGE_SUFFIX
    cols = [ident(f.name) for f in schema]
    key_cols = [ident(k) for k in keys]
    others = [c for c in cols if c not in key_cols]
    on = " AND ".join(f"T.{k} = S.{k}" for k in key_cols)
    gone = " AND ".join(f"S.{k} = {name}.{k}" for k in key_cols)
    newest_first = ", ".join(f"{c} DESC NULLS LAST" for c in others) or key_cols[0]
    changed = " OR ".join(f"T.{c} IS DISTINCT FROM S.{c}" for c in others)
    cur.execute("BEGIN")
    try:
        deleted = cur.execute(f"DELETE FROM {name} WHERE NOT EXISTS (SELECT 1 FROM {staged} S WHERE {gone})").fetchone()
        merged = cur.execute(
            f"MERGE INTO {name} T USING (SELECT * FROM {staged} QUALIFY ROW_NUMBER() OVER "
            f"(PARTITION BY {', '.join(key_cols)} ORDER BY {newest_first}) = 1) S ON {on} "
            + (f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {', '.join(f'{c} = S.{c}' for c in others)} "
               if others else "")
            + f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join(f'S.{c}' for c in cols)})")
        counts = dict(zip((d.name.lower() for d in merged.description), merged.fetchone(), strict=False))
        result = {"inserted": int(counts.get("number of rows inserted", 0) or 0),
                  "updated": int(counts.get("number of rows updated", 0) or 0),
                  "deleted": int(deleted[0] if deleted else 0)}
        cur.execute(f"INSERT INTO {AUDIT_TABLE} (BATCH_ID, RELEASE_ID, TABLE_NAME, DELTA_VERSION, ROWS_STAGED, "
                    "ROWS_INSERTED, ROWS_UPDATED, ROWS_DELETED, RUN_ID, LOADED_AT) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (audit.batch_id, audit.release_id, audit.table, audit.version, audit.rows_staged,
                     result["inserted"], result["updated"], result["deleted"], audit.run_id, datetime.now(UTC)))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute(f"DROP TABLE IF EXISTS {staged}")
    return result


def load_table(cur: SnowflakeCursor, lake: Lake, spec: TableSpec, *, release_id: str, version: int, run_id: str,
               file_rows: int) -> dict[str, Any]:
    """Publish gold table ``spec`` at ``version`` (of release ``release_id``) into its target, steps 1-3 of the
    module docstring; skipped when its batch is in the audit. A summary: status, batch id, rows staged,
    inserted, updated and deleted, columns added, seconds staging and in all."""
    batch_id = f"{release_id}:{spec.name}"
    ensure_audit(cur)
    if loaded(cur, batch_id):
        return {"status": "skipped", "batch_id": batch_id}
    newer = newest_release(cur, spec.name)
    if newer is not None and newer > release_id:
        msg = (f"expected a release newer than {newer} (already published to {ident(spec.name)}), got {release_id}; "
               "publish the current release, or roll gold back by releasing the old versions again (a new release)")
        raise StaleReleaseError(msg)
    schema, batches = lake.record_batches(spec, version)
    added = ensure_table(cur, spec.name, schema, spec.keys)
    started = perf_counter()
    staged = stage(cur, spec.name, schema, batches, file_rows=file_rows)
    stage_seconds = perf_counter() - started
    counts = merge_staged(cur, spec.name, schema, spec.keys, Audit(
        batch_id=batch_id, release_id=release_id, table=spec.name, version=version, rows_staged=staged, run_id=run_id))
    return {"status": "merged", "batch_id": batch_id, "rows_staged": staged, **counts, "added": added,
            "stage_seconds": stage_seconds, "seconds": round(perf_counter() - started, 3)}
