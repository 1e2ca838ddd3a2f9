"""Publishing gold to Snowflake, against fakesnow's server with the real connector over HTTP on loopback."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import threading
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pydantic import SecretStr

from lakehouse.backends.destinations import snowflake as warehouse
from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Releases
from lakehouse.contracts.catalog import table
from lakehouse.deployments.settings import cached_settings, load_settings
from lakehouse.flows.snowflake_publish import publish_snowflake
from lakehouse.tasks.publish import publish_table
from lakehouse.tasks.retry_policy import is_transient

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "canary-Pw-7f3a9c1e"  # a canary: it must appear in no log, artifact, parameter or table
GOLD = ("gold.dim_customer", "gold.dim_product", "gold.fact_orders", "gold.dim_date", "gold.customer_360",
        "gold.product_performance", "gold.customer_segments")


def _connect(server: dict, database: str | None = None):
    import snowflake.connector

    conn = snowflake.connector.connect(user="admin", password="admin", account="fakesnow", host=server["host"],
                                       port=server["port"], protocol="http", login_timeout=10,
                                       session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})
    if database:
        conn.cursor().execute(f"USE DATABASE {database}")
    return conn


class Target:
    """A fresh database on the fakesnow server and the LAKEHOUSE_SNOWFLAKE__* settings that point at it."""

    def __init__(self, server: dict, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server, self.monkeypatch = server, monkeypatch
        self.conn = _connect(server)
        self.use(self.new_database())

    def new_database(self) -> str:
        name = f"ANALYTICS_{uuid.uuid4().hex[:8].upper()}"
        self.conn.cursor().execute(f"CREATE DATABASE {name}")
        return name

    def use(self, database: str, **more: str) -> None:
        self.database = database
        values = {"ACCOUNT": "fakesnow", "USER": "publisher", "HOST": self.server["host"],
                  "PORT": str(self.server["port"]), "PROTOCOL": "http", "DATABASE": database, "SCHEMA": "GOLD",
                  "SECRET": "prefect-secret:snowflake-test-password", "LOGIN_TIMEOUT": "10", **more}
        for k, v in values.items():
            self.monkeypatch.setenv(f"LAKEHOUSE_SNOWFLAKE__{k}", v)
        cached_settings.cache_clear()
        self.conn.cursor().execute(f"USE DATABASE {database}")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.cursor().execute(sql, params).fetchall()

    def tables(self) -> set[str]:
        return {r[0] for r in self.query("SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'GOLD'")}

    def rows(self, name: str) -> list[tuple]:
        """The target's rows as sorted tuples of plain values, columns in name order."""
        # fakesnow's server sends a NULL timestamp as 1970-01-01 (the stored value is NULL): ask which are NULL
        stamps = [r[0] for r in self.query("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = "
                                           "'GOLD' AND TABLE_NAME = %s AND DATA_TYPE LIKE 'TIMESTAMP%%'",
                                           (warehouse.ident(name),))]
        flags = "".join(f", {c} IS NULL AS {c}__IS_NULL" for c in stamps)
        cur = self.conn.cursor().execute(f"SELECT *{flags} FROM GOLD.{warehouse.ident(name)}")
        cols = [d.name.lower() for d in cur.description]
        rows = []
        for values in cur.fetchall():
            row = dict(zip(cols, values, strict=True))
            for c in stamps:
                if row.pop(f"{c.lower()}__is_null"):
                    row[c.lower()] = None
            rows.append(row)
        return _canonical(rows)

    def audit(self) -> list[tuple]:
        return self.query("SELECT BATCH_ID, RELEASE_ID, TABLE_NAME, DELTA_VERSION, ROWS_STAGED, ROWS_INSERTED, "
                          f"ROWS_UPDATED, ROWS_DELETED FROM GOLD.{warehouse.AUDIT_TABLE} ORDER BY BATCH_ID")


def _plain(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _canonical(rows: list[dict]) -> list[tuple]:
    return sorted((tuple((k, _plain(v)) for k, v in sorted(r.items())) for r in rows), key=repr)


def released_rows(root: Path, name: str, version: int) -> list[tuple]:
    return _canonical(DeltaTable(Lake(str(root)).uri(table(name)), version=version).to_pyarrow_table().to_pylist())


def content_hash(rows: list[tuple]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture
def target(snowflake_server, prefect_harness, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value=PASSWORD).save("snowflake-test-password", overwrite=True)
    t = Target(snowflake_server, monkeypatch)
    yield t
    t.conn.close()
    cached_settings.cache_clear()


@pytest.fixture
def gold_lake(daily_lakes, tmp_path):
    """A private copy of the two-day lake the daily flow built on the laptop engine."""
    built = daily_lakes("polars")
    root = tmp_path / "lake"
    shutil.copytree(built["root"], root)
    return root


def _assert_published(t: Target, root: Path, release) -> None:
    for name, version in release.versions.items():
        got, want = t.rows(name), released_rows(root, name, version)
        assert got == want, (name, len(got), len(want), next(([(a, b) for a, b in zip(g, w, strict=False) if a != b]
                                                          for g, w in zip(got, want, strict=False) if g != w), None))


def test_first_publish_equals_the_release_and_publishing_it_again_changes_nothing(target, daily_lakes):
    root = daily_lakes("polars")["root"]  # publishing only reads the lake
    release = Releases(Lake(str(root))).current()
    first = publish_snowflake(lake_root=str(root))
    assert [s["table"] for s in first] == list(GOLD)
    assert {s["status"] for s in first} == {"merged"}
    _assert_published(target, root, release)
    audit = target.audit()
    assert [(a[0], a[3], a[4]) for a in audit] == sorted(
        (f"{release.release_id}:{s['table']}", release.versions[s["table"]], s["rows_staged"]) for s in first)
    assert all(a[5] == a[4] and a[6] == 0 and a[7] == 0 for a in audit)  # first load: every staged row inserted
    hashes = {n: content_hash(target.rows(n)) for n in GOLD}

    again = publish_snowflake(lake_root=str(root))
    assert {s["status"] for s in again} == {"skipped"}
    assert {n: content_hash(target.rows(n)) for n in GOLD} == hashes
    assert target.audit() == audit
    assert not [t for t in target.tables() if t.endswith(warehouse.STAGE_SUFFIX)]


def _rewrite(root: Path, name: str, change) -> int:
    """Write a changed copy of a gold table as its next Delta version; that version."""
    uri = Lake(str(root)).uri(table(name))
    data = change(DeltaTable(uri).to_pyarrow_table())
    write_deltalake(uri, data, mode="overwrite", schema_mode="overwrite")
    return DeltaTable(uri).version()


def _release(root: Path, **versions: int) -> object:
    releases = Releases(Lake(str(root)))
    current = releases.current()
    return releases.publish({**current.versions, **{f"gold.{k}": v for k, v in versions.items()}},
                            run_id="test-edit", run_date=current.run_date)


def test_a_new_release_with_updates_is_merged(target, gold_lake):
    publish_snowflake(lake_root=str(gold_lake))

    def products(t: pa.Table) -> pa.Table:
        rows = t.to_pylist()
        rows[0]["product_name"], rows[1]["list_price_usd"] = "Renamed product", rows[1]["list_price_usd"] + 1.0
        rows.append({**rows[2], "product_id": "P-NEW-1", "sku": "SKU-NEW-1"})
        return pa.Table.from_pylist(rows, schema=t.schema)

    def segments(t: pa.Table) -> pa.Table:
        return t.slice(1)  # a customer left the segments

    release = _release(gold_lake, dim_product=_rewrite(gold_lake, "gold.dim_product", products),
                       customer_segments=_rewrite(gold_lake, "gold.customer_segments", segments))
    summaries = {s["table"]: s for s in publish_snowflake(lake_root=str(gold_lake))}
    assert {k: summaries["gold.dim_product"][k] for k in ("inserted", "updated", "deleted")} == \
        {"inserted": 1, "updated": 2, "deleted": 0}
    assert {k: summaries["gold.customer_segments"][k] for k in ("inserted", "updated", "deleted")} == \
        {"inserted": 0, "updated": 0, "deleted": 1}
    unchanged = [s for n, s in summaries.items() if n not in ("gold.dim_product", "gold.customer_segments")]
    assert all((s["status"], s["inserted"], s["updated"], s["deleted"]) == ("merged", 0, 0, 0) for s in unchanged)
    _assert_published(target, gold_lake, release)
    assert len(target.audit()) == 2 * len(GOLD)


def test_a_crash_between_load_and_merge_then_a_rerun_converges(target, gold_lake, monkeypatch):
    real_merge = warehouse.merge_staged

    def crash_on_fact(cur, table_name, *args, **kwargs):
        if table_name == "gold.fact_orders":
            raise RuntimeError("worker lost between COPY INTO and MERGE")
        return real_merge(cur, table_name, *args, **kwargs)

    monkeypatch.setattr(warehouse, "merge_staged", crash_on_fact)
    state = publish_snowflake(lake_root=str(gold_lake), return_state=True)
    assert state.is_failed()
    assert "FACT_ORDERS__STAGE" in target.tables()
    assert target.query("SELECT COUNT(*) FROM GOLD.FACT_ORDERS__STAGE")[0][0] > 0
    assert target.query("SELECT COUNT(*) FROM GOLD.FACT_ORDERS")[0][0] == 0  # staged, never merged
    monkeypatch.setattr(warehouse, "merge_staged", real_merge)

    rerun = {s["table"]: s["status"] for s in publish_snowflake(lake_root=str(gold_lake))}
    assert rerun == {"gold.dim_customer": "skipped", "gold.dim_product": "skipped",
                     **{n: "merged" for n in GOLD[2:]}}
    after_crash = {n: target.rows(n) for n in GOLD}
    target.use(target.new_database())
    publish_snowflake(lake_root=str(gold_lake))
    clean = {n: target.rows(n) for n in GOLD}
    assert {n: (len(r), content_hash(r)) for n, r in after_crash.items()} == \
        {n: (len(r), content_hash(r)) for n, r in clean.items()}
    assert not [t for t in target.tables() if t.endswith(warehouse.STAGE_SUFFIX)]


def test_a_lake_written_by_the_spark_engine_publishes_the_same(target, daily_lakes):
    spark_root, polars_root = daily_lakes("sail")["root"], daily_lakes("polars")["root"]
    publish_snowflake(lake_root=str(spark_root))
    from_spark = {n: content_hash(target.rows(n)) for n in GOLD}
    target.use(target.new_database())
    publish_snowflake(lake_root=str(polars_root))
    assert {n: content_hash(target.rows(n)) for n in GOLD} == from_spark
    _assert_published(target, spark_root, Releases(Lake(str(spark_root))).current())


def test_a_new_gold_column_is_added_and_a_dropped_or_retyped_one_fails_clearly(target, gold_lake):
    publish_snowflake(lake_root=str(gold_lake))
    with_fiscal = _rewrite(gold_lake, "gold.dim_date", lambda t: t.append_column(
        "fiscal_year", pa.array([y + 1 for y in t["year"].to_pylist()], pa.int64())))
    release = _release(gold_lake, dim_date=with_fiscal)
    publish_snowflake(lake_root=str(gold_lake))
    assert "FISCAL_YEAR" in [r[0] for r in target.query(
        "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'DIM_DATE'")]
    _assert_published(target, gold_lake, release)
    before = target.rows("gold.dim_product")

    no_category = _rewrite(gold_lake, "gold.dim_product", lambda t: t.drop_columns(["category"]))
    _release(gold_lake, dim_product=no_category)
    state = publish_snowflake(lake_root=str(gold_lake), return_state=True)
    assert state.is_failed()
    assert "columns ['CATEGORY'] are not in gold any more" in state.message
    assert target.rows("gold.dim_product") == before

    day_as_text = _rewrite(gold_lake, "gold.dim_date", lambda t: t.set_column(
        t.schema.get_field_index("day"), "day", pa.array([str(d) for d in t["day"].to_pylist()])))
    _release(gold_lake, dim_date=day_as_text, dim_product=no_category - 1)  # dim_product as it was
    state = publish_snowflake(lake_root=str(gold_lake), return_state=True)
    assert state.is_failed() and "DAY is NUMBER, gold has VARCHAR" in state.message


def test_staging_rows_are_deduplicated_so_the_merge_is_deterministic(target, snowflake_server):
    settings = load_settings()
    conn = warehouse.connect(settings.snowflake, SecretStr("any password: fakesnow does not check"))
    cur = conn.cursor()
    warehouse.ensure_audit(cur)
    data = pa.table({"k": ["a", "b", "c"], "v": pa.array([1, 2, 3], pa.int64())})
    clash = pa.table({"k": ["a"], "v": pa.array([9], pa.int64())})
    warehouse.ensure_table(cur, "dedup_demo", data.schema, ["k"])
    staged = warehouse.stage(cur, "dedup_demo", data.schema,
                             [*data.to_batches(), *data.to_batches(), *clash.to_batches()], file_rows=2)
    assert staged == 7
    counts = warehouse.merge_staged(cur, "dedup_demo", data.schema, ["k"], warehouse.Audit(
        batch_id="demo:1", release_id="demo", table="dedup_demo", version=0, rows_staged=staged, run_id="t"))
    assert counts == {"inserted": 3, "updated": 0, "deleted": 0}
    # one row per key; of two rows for a key, the larger values win (ORDER BY every column DESC)
    assert target.query("SELECT K, V FROM GOLD.DEDUP_DEMO ORDER BY K") == [("a", 9), ("b", 2), ("c", 3)]
    assert warehouse.loaded(cur, "demo:1") and not warehouse.loaded(cur, "demo:2")
    conn.close()


def test_key_pair_secret_from_aws_secrets_manager(target, daily_lakes, aws):
    import json

    import boto3
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    name = f"snowflake/publisher-{uuid.uuid4().hex[:6]}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({"private_key": pem}))
    target.use(target.database, AUTHENTICATOR="key_pair", SECRET=f"aws-secretsmanager:{name}#private_key")
    root = daily_lakes("polars")["root"]
    assert {s["status"] for s in publish_snowflake(lake_root=str(root))} == {"merged"}
    _assert_published(target, root, Releases(Lake(str(root))).current())


def test_secret_references_fail_clearly(prefect_harness, aws):
    from lakehouse.deployments.secrets import SecretNotFoundError, resolve_secret

    with pytest.raises(SecretNotFoundError, match="expected a Prefect Secret block named 'nope'"):
        resolve_secret("prefect-secret:nope", what="snowflake.secret")
    with pytest.raises(SecretNotFoundError, match="expected AWS Secrets Manager secret 'absent'.*ResourceNotFound"):
        resolve_secret("aws-secretsmanager:absent", what="snowflake.secret")
    with pytest.raises(SecretNotFoundError, match="expected snowflake.secret as prefect-secret:<block name>"):
        resolve_secret("vault:x", what="snowflake.secret")
    import boto3

    boto3.client("secretsmanager").create_secret(Name="flat-secret", SecretString="not json")
    with pytest.raises(SecretNotFoundError, match="expected field 'password'.*not a JSON object"):
        resolve_secret("aws-secretsmanager:flat-secret#password", what="snowflake.secret")
    with pytest.raises(ValueError, match="snowflake.secret") as refused:
        load_settings(snowflake={"secret": "hunter2-password"})  # a secret itself is refused; only a reference
    assert "hunter2" not in str(refused.value)  # and not echoed


def test_the_secret_appears_in_no_log_parameter_or_table(target, daily_lakes, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    root = daily_lakes("polars")["root"]
    caplog.set_level(logging.DEBUG)
    for name in ("snowflake.connector", "prefect", "urllib3", "botocore"):
        caplog.set_level(logging.DEBUG, logger=name)
    state = publish_snowflake(lake_root=str(root), return_state=True)
    assert state.is_completed()
    assert "gold.fact_orders" in caplog.text  # the logs were captured
    assert PASSWORD not in caplog.text
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert logs and not [entry for entry in logs if PASSWORD in entry.message]
    assert PASSWORD not in repr(run.parameters)
    everything = [r for name in GOLD for r in target.rows(name)] + target.audit()
    assert PASSWORD not in repr(everything)


class LateProxy:
    """A loopback port where nothing listens until ``open_after`` seconds have passed; from then on it forwards
    every connection to the Snowflake server: the network coming back during a run."""

    def __init__(self, server: dict, open_after: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server, self.open_after = server, open_after
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if self._stop.wait(self.open_after):
            return
        with socket.create_server(("127.0.0.1", self.port)) as listener:
            listener.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                self.accepted += 1
                upstream = socket.create_connection((self.server["host"], self.server["port"]))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_transient_errors_are_retried_and_others_are_not(target, daily_lakes):
    import snowflake.connector.errors as sf_errors
    from prefect import flow
    from prefect.client.orchestration import get_client

    root = daily_lakes("polars")["root"]
    release = Releases(Lake(str(root))).current()
    proxy = LateProxy(target.server, open_after=5.0)
    target.use(target.database, PORT=str(proxy.port), LOGIN_TIMEOUT="1")

    @flow
    def one_table() -> object:
        return publish_table.with_options(retries=30, retry_delay_seconds=1)(
            "local", {"lake_root": str(root)}, release.release_id, "gold.dim_date",
            release.versions["gold.dim_date"], "retry-test", return_state=True)

    try:
        state = one_table()
    finally:
        proxy.close()
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        history = client.read_task_run_states(state.state_details.task_run_id)
    assert [h.name for h in history].count("Retrying") >= 1  # failed while the port was closed, then retried
    assert history[-1].is_completed() and proxy.accepted > 0
    assert target.rows("gold.dim_date") == released_rows(root, "gold.dim_date", release.versions["gold.dim_date"])

    with pytest.raises(sf_errors.DatabaseError) as sql_error:
        target.conn.cursor().execute("SELECT * FROM NO_SUCH_TABLE")
    assert not is_transient(sql_error.value)
    assert not is_transient(warehouse.SchemaDriftError("retyped"))


def test_publish_command_and_daily_flow_step(target, gold_lake, daily_lakes, monkeypatch):
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app
    from lakehouse.flows.daily import daily_lakehouse

    runner = CliRunner()
    bad = runner.invoke(app, ["publish", "--to", "snowflake", "--release", "gold-999999", "--lake-root", str(gold_lake)])
    before = Releases(Lake(str(gold_lake))).current()
    assert bad.exit_code == 2 and "expected --release to be a gold release" in bad.output
    assert before.release_id in bad.output  # the message lists the latest releases
    wrong = runner.invoke(app, ["publish", "--to", "redshift", "--lake-root", str(gold_lake)])
    assert wrong.exit_code == 2 and "expected --to snowflake" in wrong.output
    first = Releases(Lake(str(gold_lake))).history()[0]
    ok = runner.invoke(app, ["publish", "--to", "snowflake", "--release", first.release_id,
                             "--lake-root", str(gold_lake)])
    assert ok.exit_code == 0, ok.output
    assert first.release_id in ok.output and "merged" in ok.output
    _assert_published(target, gold_lake, first)

    # the daily flow publishes the release it makes when publish_with_daily is set
    target.use(target.database, PUBLISH_WITH_DAILY="true")
    day = date.fromisoformat("2026-11-02")
    summaries = daily_lakehouse(run_date=day, lake_root=str(gold_lake), force=True,
                                landing_root=str(daily_lakes("polars")["landing"]))
    published = [s for s in summaries if s["stage"] == "snowflake"]
    assert [s["table"] for s in published] == list(GOLD) and {s["status"] for s in published} == {"merged"}
    history = Releases(Lake(str(gold_lake))).history()
    newest = history[-1]
    assert newest.seq == before.seq + 1 and {s["batch_id"] for s in published} == {
        f"{newest.release_id}:{name}" for name in GOLD}
    _assert_published(target, gold_lake, newest)
    older = runner.invoke(app, ["publish", "--to", "snowflake", "--release", history[-2].release_id,
                                "--lake-root", str(gold_lake)])
    assert older.exit_code == 2 and f"expected a release newer than {newest.release_id}" in older.output
