"""The SQL connectors against real servers: Snowflake (fakesnow's server) and Redshift (a PostgreSQL the tests
start). Each lands exactly the bronze rows the file path lands, fetches late-committed rows through the
lookback without landing a record twice, and resumes a killed extract with no duplicates and no gaps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from lakehouse.backends.lake import Lake
from lakehouse.backends.sources.extract import FILE_PREFIX, ExtractLog
from lakehouse.contracts.landing import landing_entity
from lakehouse.deployments.settings import cached_settings
from lakehouse.flows.cli import app
from tests.conftest import ROOT
from tests.source_systems import TwoPaths, day_rows, representable, write_landing

DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
SQL_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "date": "DATE", "timestamp": "TIMESTAMP"}


@pytest.fixture
def generated(source_landing):
    return source_landing


def _ddl(entity, table: str, scales: dict[str, int]) -> str:
    cols = ", ".join(f"{c.name} {f'NUMERIC(18,{scales[c.name]})' if c.type == 'decimal' else SQL_TYPES[c.type]}"
                     for c in entity.columns)
    return f"CREATE TABLE {table} ({cols})"


def _values(rows: pa.Table) -> list[tuple]:
    """Rows as parameters; timestamps naive UTC (the source's TIMESTAMP columns hold UTC)."""
    out = []
    for r in rows.to_pylist():
        out.append(tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v for v in r.values()))
    return out


class SnowflakeSource:
    """A fresh database on the fakesnow server and LAKEHOUSE_SOURCES__SNOWFLAKE__* pointing at it."""

    def __init__(self, server: dict, monkeypatch) -> None:
        import snowflake.connector

        self.conn = snowflake.connector.connect(user="admin", password="admin", account="fakesnow",
                                                host=server["host"], port=server["port"], protocol="http",
                                                login_timeout=10,
                                                session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})
        self.database = f"RAW_{uuid.uuid4().hex[:8].upper()}"
        cur = self.conn.cursor()
        cur.execute(f"CREATE DATABASE {self.database}")
        cur.execute(f"USE DATABASE {self.database}")
        cur.execute("CREATE SCHEMA PUBLIC")
        cur.execute("USE SCHEMA PUBLIC")
        for k, v in {"ACCOUNT": "fakesnow", "USER": "extractor", "HOST": server["host"], "PORT": str(server["port"]),
                     "PROTOCOL": "http", "DATABASE": self.database, "SCHEMA": "PUBLIC",
                     "SECRET": "prefect-secret:source-snowflake-password", "LOGIN_TIMEOUT": "10"}.items():
            monkeypatch.setenv(f"LAKEHOUSE_SOURCES__SNOWFLAKE__{k}", v)

    def create(self, entity, scales) -> None:
        self.conn.cursor().execute(_ddl(entity, entity.entity.upper(), scales))

    def insert(self, entity, rows: pa.Table) -> None:
        """Bulk load through the table's stage (PUT a Parquet file, COPY INTO), as data gets into Snowflake."""
        if not rows.num_rows:
            return
        import tempfile

        import pyarrow.parquet as pq

        naive = pa.table({n: (c.cast(pa.timestamp("us")) if pa.types.is_timestamp(c.type) else c)
                          for n, c in zip(rows.column_names, rows.columns, strict=True)})
        table = entity.entity.upper()
        cur = self.conn.cursor()
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/rows-{uuid.uuid4().hex}.parquet"  # COPY skips a file name it loaded before
            pq.write_table(naive, path)
            cur.execute(f"PUT 'file://{path}' @%{table} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
        cur.execute(f"COPY INTO {table} FROM @%{table} FILE_FORMAT = (TYPE = PARQUET) "
                    "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE")


class RedshiftSource:
    """A fresh schema on the PostgreSQL server and LAKEHOUSE_SOURCES__REDSHIFT__* pointing at it."""

    def __init__(self, server: dict, monkeypatch) -> None:
        import psycopg

        self.conn = psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                                    password=server["password"], dbname=server["database"], autocommit=True)
        self.schema = f"raw_{uuid.uuid4().hex[:8]}"
        self.conn.execute(f"CREATE SCHEMA {self.schema}")
        for k, v in {"HOST": server["host"], "PORT": str(server["port"]), "DATABASE": server["database"],
                     "SCHEMA": self.schema, "USER": server["user"], "SSLMODE": "disable",
                     "SECRET": "prefect-secret:source-redshift-password"}.items():
            monkeypatch.setenv(f"LAKEHOUSE_SOURCES__REDSHIFT__{k}", v)

    def create(self, entity, scales) -> None:
        self.conn.execute(_ddl(entity, f"{self.schema}.{entity.entity}", scales))

    def insert(self, entity, rows: pa.Table) -> None:
        if rows.num_rows:
            marks = ", ".join(["%s"] * rows.num_columns)
            with self.conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {self.schema}.{entity.entity} VALUES ({marks})", _values(rows))


@pytest.fixture
def source_for(prefect_harness, snowflake_server, postgres_server, monkeypatch):
    """``source_for(entity)``: the SQL source system of an entity, empty, with the settings pointing at it."""
    from prefect.blocks.system import Secret

    Secret(value="admin").save("source-snowflake-password", overwrite=True)
    Secret(value=postgres_server["password"]).save("source-redshift-password", overwrite=True)
    made = []

    def make(entity):
        source = (SnowflakeSource(snowflake_server, monkeypatch) if entity.source == "snowflake"
                  else RedshiftSource(postgres_server, monkeypatch))
        cached_settings.cache_clear()
        made.append(source)
        return source

    yield make
    for s in made:
        s.conn.close()
    cached_settings.cache_clear()


def _scales(generated, entity) -> dict[str, int]:
    frame, _ = day_rows(generated, entity, DAYS[0])
    from tests.source_systems import _scale

    return {c.name: _scale(frame.get_column(c.name)) for c in entity.columns if c.type == "decimal"}


SQL_ENTITIES = ["snowflake.customers", "snowflake.orders", "snowflake.products", "redshift.customer_behaviour"]


@pytest.mark.parametrize("name", SQL_ENTITIES)
def test_sql_connector_lands_the_file_paths_bronze_rows(name, generated, source_for, tmp_path):
    entity = landing_entity(name)
    source = source_for(entity)
    source.create(entity, _scales(generated, entity))
    paths = TwoPaths(tmp_path)
    pulled = []
    for day in DAYS:
        text, _ = day_rows(generated, entity, day)
        kept, rows = representable(text, entity)
        write_landing(paths.landing("files"), entity, day, kept)
        source.insert(entity, rows)  # the day's changes reach the source before its run
        paths.run_files(name, day)
        pulled.append(paths.run_connector(name, day)[0])
    files, connector = paths.bronze("files", entity), paths.bronze("connector", entity)
    assert connector.height > 0
    assert connector.equals(files)  # same rows, same record hashes, same ingest dates
    assert paths.quarantined("connector", entity) == paths.quarantined("files", entity)
    # the first day has no watermark; later days fetch from the previous end minus the lookback (3 days)
    assert pulled[0]["window"].startswith("[the beginning, 2026-11-02T00:00:00+00:00)")
    assert pulled[2]["window"] == "[2026-10-31T00:00:00+00:00, 2026-11-04T00:00:00+00:00)"
    # the lookback refetched day 1 and 2, and none of those rows landed again
    assert pulled[2]["dropped_known"] > 0
    assert sum(p["rows_written"] for p in pulled) == connector.height


def test_a_row_committed_late_is_fetched_through_the_lookback_once(generated, source_for, tmp_path):
    entity = landing_entity("snowflake.orders")
    source = source_for(entity)
    source.create(entity, _scales(generated, entity))
    paths = TwoPaths(tmp_path)
    for day in DAYS[:2]:
        source.insert(entity, representable(day_rows(generated, entity, day)[0], entity)[1])
        paths.run_connector(entity.name, day)
    # committed after day 2's extract, with an updated_at of day 2: behind the watermark
    late = {"order_id": "O-LATE-1", "customer_id": "C0000001", "product_id": "P00001", "quantity": 2,
            "unit_price": None, "currency": "EUR", "status": "placed",
            "order_ts": datetime(2026, 11, 2, 21, 0, tzinfo=UTC), "updated_at": datetime(2026, 11, 2, 22, 0, tzinfo=UTC)}
    schema = pa.schema([(c.name, pa.timestamp("us", tz="UTC") if c.type == "timestamp" else
                         (pa.int64() if c.type == "integer" else pa.string())) for c in entity.columns])
    source.insert(entity, pa.Table.from_pylist([late], schema=schema))
    pulled, _ = paths.run_connector(entity.name, DAYS[2])
    bronze = paths.bronze("connector", entity)
    got = bronze.filter(pl.col("order_id") == "O-LATE-1")
    assert got.height == 1 and got.item(0, "_ingest_date") == DAYS[2]
    assert got.item(0, "updated_at") == "2026-11-02T22:00:00Z"
    assert pulled["dropped_known"] > 0
    # no record version landed twice
    assert bronze.select(entity.column_names).is_duplicated().sum() == _duplicates_in_source(generated, entity)


def _duplicates_in_source(generated, entity) -> int:
    rows = pl.concat([representable(day_rows(generated, entity, d)[0], entity)[0] for d in DAYS[:2]])
    return int(rows.is_duplicated().sum())


@pytest.mark.parametrize("name", ["snowflake.orders", "redshift.customer_behaviour"])
def test_a_killed_extract_resumes_without_duplicates_or_gaps(name, generated, source_for, tmp_path, monkeypatch):
    entity = landing_entity(name)
    source = source_for(entity)
    source.create(entity, _scales(generated, entity))
    day = DAYS[0]
    kept, rows = representable(day_rows(generated, entity, day)[0], entity)
    source.insert(entity, rows)
    paths = TwoPaths(tmp_path)
    per_file = str(max(1, rows.num_rows // 80))  # some 80 files: the kill lands midway
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", per_file)
    monkeypatch.setenv("LAKEHOUSE_SOURCES__BATCH_ROWS", per_file)
    cached_settings.cache_clear()
    lake = Lake(str(paths.lake("connector")))
    log = ExtractLog(lake, entity)
    cmd = [sys.executable, "-m", "lakehouse.flows.cli", "sources", "extract", name, "--date", day.isoformat(),
           "--lake-root", str(paths.lake("connector")), "--landing", str(paths.landing("connector"))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_with_api(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(log.rows()) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the extract recorded no piece in 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = log.rows()
    assert not any(r["done"] for r in recorded), "the extract finished before it was killed"
    pulled = paths.extract(name, day)  # the rerun, in this process
    assert pulled["resumed"] and not pulled["skipped"]
    landed = pl.concat([pl.read_csv(f, infer_schema=False) if entity.format == "csv" else pl.read_parquet(f)
                        for f in sorted((paths.landing("connector") / entity.source / entity.entity /
                                         day.isoformat()).glob(f"{FILE_PREFIX}*"))])
    cols = entity.column_names
    assert landed.sort(cols, nulls_last=True).equals(kept.sort(cols, nulls_last=True))  # no duplicate, no gap
    assert len({r["seq"] for r in log.rows()}) == len(log.rows())
    again = paths.extract(name, day)
    assert again["skipped"] and again["rows_written"] == 0


def test_sources_check_reports_each_connection_and_what_it_would_fetch(generated, source_for, tmp_path, monkeypatch,
                                                                        postgres_server):
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.sources_cli import check_sources

    entity = landing_entity("snowflake.orders")
    source = source_for(entity)
    source.create(entity, _scales(generated, entity))
    source.insert(entity, representable(day_rows(generated, entity, DAYS[0])[0], entity)[1])
    monkeypatch.setenv("LAKEHOUSE_SOURCES__ENTITIES", '{"snowflake.orders": "connector", '
                       '"redshift.customer_behaviour": "connector"}')
    for k, v in {"HOST": "127.0.0.1", "PORT": str(_closed_port()), "USER": "lakehouse", "SSLMODE": "disable",
                 "CONNECT_TIMEOUT": "2", "SECRET": "prefect-secret:source-redshift-password"}.items():
        monkeypatch.setenv(f"LAKEHOUSE_SOURCES__REDSHIFT__{k}", v)  # nothing listens there
    settings = load_settings("local", lake_root=str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))
    rows = {r["entity"]: r for r in check_sources(settings, DAYS[0])}
    orders = rows["snowflake.orders"]
    expected = representable(day_rows(generated, entity, DAYS[0])[0], entity)[0].height
    assert orders["ok"] and orders["would_fetch"] == f"{expected} record(s)"
    assert "ORDERS" in orders["from"] and orders["window"].endswith("2026-11-02T00:00:00+00:00)")
    behaviour = rows["redshift.customer_behaviour"]
    assert not behaviour["ok"] and "could not connect to Redshift" in behaviour["error"]
    accounts = rows["crm.accounts"]  # delivered daily as files, and no landing folder here
    assert accounts["source"] == "files" and accounts["delivery"] == "daily" and not accounts["ok"]
    assert "no delivery for 2026-11-01" in accounts["error"] and "--allow-missing crm.accounts" in accounts["error"]
    # the command itself exits 1 when a connection fails, and prints the error in full
    cached_settings.cache_clear()
    out = CliRunner().invoke(app, ["sources", "check", "--date", "2026-11-01", "--lake-root", str(tmp_path / "lake"),
                                   "--landing", str(tmp_path / "landing")], env={"COLUMNS": "300"})
    assert out.exit_code == 1, out.output
    assert f"{expected} record(s)" in out.output
    assert "redshift.customer_behaviour: SourceError: could not connect to Redshift" in " ".join(out.output.split())


def _with_api() -> dict[str, str]:
    """This process's environment, with the test Prefect server's URL (secret blocks live there)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}


def _closed_port() -> int:
    from tests.conftest import _free_port

    return _free_port()


def test_redshift_settings_name_what_is_missing(monkeypatch):
    from lakehouse.backends.sources import connector_for
    from lakehouse.deployments.settings import SettingsError, load_settings

    monkeypatch.delenv("LAKEHOUSE_SOURCES__REDSHIFT__HOST", raising=False)
    with pytest.raises(SettingsError, match=r"sources\.redshift\.host, sources\.redshift\.user, "
                                            r"sources\.redshift\.secret"):
        connector_for(landing_entity("redshift.customer_behaviour"), load_settings("local"))
    # a run with a connector chosen but not configured stops before it writes anything
    chosen = load_settings("local", sources={"entities": {"crm.contacts": "connector", "snowflake.orders": "files"}})
    with pytest.raises(SettingsError, match=r"expected sources\.crm\.base_url, sources\.crm\.token_secret to call"):
        chosen.sources.require_connectors()
    load_settings("local").sources.require_connectors()  # files only: nothing to check
    with pytest.raises(SettingsError, match="expected entity names among"):
        load_settings("local", sources={"entities": {"snowflake.order": "connector"}})
    assert timedelta(days=load_settings("local").lookback_days) == timedelta(days=3)


def test_dates_run_out_of_order_land_each_record_once(generated, source_for, tmp_path, lakehouse_engine, request,
                                                     monkeypatch):
    """On both engines. The records bronze already holds are found by a join in the engine per landing file (here
    20 rows), which hands back at most that file's hashes, never the lookback window's."""
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.testing import handed_over

    file_rows = 20
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", str(file_rows))
    monkeypatch.setenv("LAKEHOUSE_SOURCES__BATCH_ROWS", str(file_rows))
    entity = landing_entity("redshift.customer_behaviour")
    source = source_for(entity)
    source.create(entity, _scales(generated, entity))
    kept = [representable(day_rows(generated, entity, d)[0], entity) for d in DAYS]
    for _, rows in kept:
        source.insert(entity, rows)
    spark = {} if lakehouse_engine == "polars" else {"backend": "spark", "spark_remote": request.getfixturevalue("sail_url")}
    paths = TwoPaths(tmp_path, engine=spark)
    first, second, third = DAYS
    paths.run_connector(entity.name, first)
    paths.run_connector(entity.name, third)  # day 2 skipped, run later: the third's lookback already took its rows
    with handed_over(paths.ctx("connector", second).engine()) as sizes:
        pulled = paths.extract(entity.name, second)
    # its window (day 1's end minus the lookback, to day 2's end) holds days 1 and 2: all landed already
    fetched = kept[0][0].height + kept[1][0].height
    assert pulled["rows_written"] == 0 and pulled["dropped_known"] == fetched > 2 * file_rows
    # bronze holds every one of them from the window's first ingest date on; a file's hashes came back at a time
    assert paths.bronze("connector", entity).height >= fetched
    assert len(sizes) >= fetched // file_rows and max(sizes) <= file_rows, sizes
    ingest_entity.fn(paths.ctx("connector", second), entity.name)
    cols = entity.column_names
    landed = paths.bronze("connector", entity).select(cols).sort(cols, nulls_last=True)
    assert landed.equals(pl.concat([k for k, _ in kept]).sort(cols, nulls_last=True))
