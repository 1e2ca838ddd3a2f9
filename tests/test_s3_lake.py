"""Landing and lake on S3 (moto's server on loopback). The laptop engine: the daily flow end to end with
credentials from an AwsCredentials block, task results on S3 so a retried flow run resumes from them, the ledger
and lineage in the bucket, and the same tables as the local lake built from the same landing files, read from
S3. Spark (Sail, reading and writing ``s3://`` itself): landing generated to S3, the laptop engine's first day
uploaded and the second day run as EMR Serverless job runs with landing and lake on S3, every table equal to the
laptop engine's local lake, the landing read again finding every file already ingested, and a vacuum. Roots whose bucket is missing, without
credentials, or unreachable fail in seconds before any write."""

from __future__ import annotations

from datetime import date

import boto3
import pytest
from conftest import EMR_ROLE, ROOT, s3_objects, upload
from deltalake import DeltaTable
from lakes import assert_same_rows, normalise

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Releases
from lakehouse.contracts.catalog import TABLES, tables
from lakehouse.tasks.ledger import read_ledger
from lakehouse.tasks.lineage import lineage_events

pytestmark = pytest.mark.slow

DAYS = [date(2026, 11, 1), date(2026, 11, 2)]


def _rows(uri: str, name: str):
    """Table ``name`` at ``uri`` in the comparable form of ``tests/lakes.py`` (run columns out, sorted)."""
    return normalise(DeltaTable(uri).to_pyarrow_table(), name)


def test_the_daily_flow_on_an_s3_lake(aws, daily_lakes, monkeypatch):
    """Credentials from a prefect-aws AwsCredentials block (the environment has none while the flow runs)."""
    from prefect_aws import AwsCredentials

    import lakehouse.tasks.transforms.gold as gold_module
    from lakehouse.deployments.settings import cached_settings
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks.retry_policy import LAKE_RETRIES

    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # moto's endpoint is plain HTTP on loopback
    local = daily_lakes("polars")
    boto3.client("s3").create_bucket(Bucket="lake-bucket")
    # The run's credentials come from an AwsCredentials block, not from the environment.
    AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing",
                   region_name="us-east-1").save("lakehouse-s3-test", overwrite=True)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, "unset")  # so that the test's end restores the environment as it was
        monkeypatch.delenv(key)
    monkeypatch.setenv("LAKEHOUSE_AWS_CREDENTIALS_BLOCK", "lakehouse-s3-test")
    cached_settings.cache_clear()
    root = "s3://lake-bucket/prod/lake"
    lake = Lake(root)
    s3 = boto3.client("s3", aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    upload(s3, local["first_day"], root, skip=("_results", "_lineage"))

    # The landing files go to S3 too: day 2 reads them there.
    landing = "s3://lake-bucket/prod/landing"
    upload(s3, local["landing"], landing)

    # Day 1 is the local lake as the laptop engine's first day left it, uploaded (the moto server is slow; day 2
    # is what runs on S3), then
    # day 2 fails in a task (every try of its first attempt), and the flow run's retry resumes from the task
    # results kept on S3.
    real, calls = gold_module.build_customer_360, {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] <= 1 + LAKE_RETRIES["retries"]:
            raise OSError("simulated: object store unavailable")
        return real(*args, **kw)

    monkeypatch.setattr(gold_module, "build_customer_360", failing)
    state = daily_lakehouse.with_options(retries=1, retry_delay_seconds=0)(
        run_date=DAYS[1], lake_root=root, landing_root=landing, return_state=True)
    assert state.is_completed(), state.message
    assert calls["n"] == 2 + LAKE_RETRIES["retries"]

    # Every table equals the local lake's; gold is released.
    assert Releases(lake).current().run_date == DAYS[1]
    for spec in TABLES.values():
        if not (local["pristine"] / spec.path / "_delta_log").is_dir():
            continue
        on_s3 = _rows(lake.uri(spec), spec.name)
        on_disk = _rows(str(local["pristine"] / spec.path), spec.name)
        assert on_s3.equals(on_disk), spec.name
        assert on_s3.height > 0 or not spec.name.startswith("gold."), spec.name

    # Task results, ledger and lineage are in the bucket.
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-bucket", Prefix="prod/lake/")
            for o in page.get("Contents", [])]
    assert any(k.startswith("prod/lake/_results/") for k in keys)
    assert any(k.startswith("prod/lake/_ledger/runs/_delta_log/") for k in keys)
    ledger = read_ledger(lake)
    day2 = [r for r in ledger if r["run_date"] == DAYS[1]]
    completed = [r["task"] for r in day2 if r["status"] == "completed"]
    assert len(completed) == len(set(completed)) == 30, "the retry re-ran no completed task"
    assert [r["task"] for r in day2 if r["status"] == "failed"] == ["gold-gold.customer_360"] * (
        1 + LAKE_RETRIES["retries"])
    events = lineage_events(lake)  # day 2's (day 1's went to the disk lake's file)
    assert {e["run"]["runId"] for e in events} == {r["task_run_id"] for r in day2}
    fact = next(e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith("gold-gold.fact_orders"))
    assert fact["outputs"][0]["namespace"] == "s3://lake-bucket"
    assert ("s3://lake-bucket", "prod/landing/snowflake/orders") in {
        (i["namespace"], i["name"]) for e in events for i in e.get("inputs", [])}
    assert fact["outputs"][0]["name"] == "prod/lake/gold/fact_orders"
    cached_settings.cache_clear()  # later tests read settings without the block


def test_spark_runs_the_daily_flow_on_emr_with_landing_and_lake_on_s3(aws, sail_s3_url, pristine_lake, daily_lakes,
                                                                      emr_app, prefect_harness):
    """Sail reads and writes the lake's tables on S3 (its server's environment names the endpoint, as an EMR job's
    role does). Day 1 is the lake the laptop engine's first day left, uploaded (a lake moves to the cluster as it
    is; moto's server is slow, and the in-process Spark run of a day is the same code the drivers run); day 2 runs
    as EMR Serverless job runs (moto's, tests/moto_emr.py), one per stage, each a new driver process in a new folder
    that reads landing and lake from S3 only."""
    from lakehouse.flows.emr import emr_daily_lakehouse
    from lakehouse.flows.vacuum import vacuum_lake

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="spark-landing")
    s3.create_bucket(Bucket="spark-lake")
    landing, root = "s3://spark-landing/prod/landing", "s3://spark-lake/prod/lake"
    code, out = _run(["generate", "--days", "2", "--scale", "0.03", "--seed", "7", "--out", landing])
    assert code == 0, out
    local_landing = pristine_lake["landing"]
    on_disk = {f.relative_to(local_landing).as_posix(): f.stat().st_size for f in local_landing.rglob("*")
               if f.is_file()}
    assert s3_objects(s3, landing) == on_disk, "generate --out s3:// writes what it writes locally"

    spark = {"backend": "spark", "spark_remote": sail_s3_url}
    upload(s3, daily_lakes("polars")["first_day"], root, skip=("_results", "_lineage"))
    emr_app.driver_env(LAKEHOUSE_SPARK__REMOTE=sail_s3_url)
    state = emr_daily_lakehouse(run_date=DAYS[1], env="local", lake_root=root, landing_root=landing,
                                return_state=True)
    assert state.is_completed(), state.message
    runs = sorted(emr_app.runs(), key=lambda r: r["createdAt"])
    assert [(r["tags"]["lakehouse:stage"], r["state"]) for r in runs] == [
        ("ingest", "SUCCESS"), ("refine", "SUCCESS"), ("publish", "SUCCESS")]
    assert {r["executionRole"] for r in runs} == {EMR_ROLE}
    for run in runs:  # each driver ran the shipped archive, not this checkout, and kept nothing but its logs
        stdout = emr_app.log(run["jobRunId"], "stdout")
        assert f"/{run['jobRunId']}/lakehouse" in stdout and str(ROOT) not in stdout
        folder = emr_app.workdir(run["jobRunId"])
        kept = {f.relative_to(folder).parts[0] for f in folder.rglob("*") if f.is_file()}
        assert kept == {"entrypoint.py", ".archives", "lakehouse", "stdout", "stderr"}, kept

    lake = Lake(root)
    for name, spec in sorted(TABLES.items()):
        local = pristine_lake["root"] / spec.path
        assert DeltaTable.is_deltatable(lake.uri(spec)) == (local / "_delta_log").is_dir(), name
        if (local / "_delta_log").is_dir():
            assert_same_rows(name, _rows(str(local), name), _rows(lake.uri(spec), name))
    assert Releases(lake).current().run_date == DAYS[1]
    ledger = read_ledger(lake)
    assert {r["run_date"] for r in ledger if r["status"] == "completed"} == set(DAYS)
    events = lineage_events(lake)
    inputs = {(i["namespace"], i["name"]) for e in events for i in e.get("inputs", [])}
    assert ("s3://spark-landing", "prod/landing/snowflake/orders") in inputs
    assert ("s3://spark-lake", "prod/lake/gold/fact_orders") in {(o["namespace"], o["name"]) for e in events
                                                                 for o in e.get("outputs", [])}

    # Day 2's landing read again (a CSV, a Parquet and a stream's JSON-lines entity): every file is found already
    # ingested, bronze gains no row and no commit.
    from datetime import UTC, datetime

    from lakehouse.contracts.catalog import bronze_for
    from lakehouse.contracts.landing import landing_entity
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.tasks.context import RunContext

    ctx = RunContext(run_date=DAYS[1], run_id="again", started_at=datetime.now(UTC),
                     overrides={"lake_root": root, "landing_root": landing, **spark})
    for name in ("crm.contacts", "snowflake.customers", "kafka.order_events"):
        spec = bronze_for(landing_entity(name))
        before = DeltaTable(lake.uri(spec)).version()
        summary = ingest_entity.fn(ctx, name)
        assert summary["files"] > 0 and summary["new_files"] == 0 and summary["rows_written"] == 0, summary
        assert DeltaTable(lake.uri(spec)).version() == before, name

    # A vacuum of everything no kept version reads: gold as released still reads the same.
    before = len(s3_objects(s3, root))
    done = vacuum_lake(lake, retention_hours=0)
    assert sum(v.files for v in done) > 0 and len(s3_objects(s3, root)) < before
    for spec in tables("gold"):  # type: ignore[arg-type]
        assert_same_rows(spec.name, _rows(str(pristine_lake["root"] / spec.path), spec.name),
                         _rows(lake.uri(spec), spec.name))


def _run(args: list[str]):
    """A CLI command in this process. The tests that call it use the Prefect test harness, so a check that let a
    run through would report to the harness, not start a server in the user's Prefect home."""
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(params=["polars", "spark"])
def run_options(request, sail_url) -> list[str]:
    return [] if request.param == "polars" else ["--backend", "spark", "--spark-remote", sail_url]


def test_an_s3_root_whose_bucket_does_not_exist_fails_before_any_write(aws, sample_landing, run_options, tmp_path,
                                                                      prefect_harness):
    root = "s3://no-such-bucket/lake"
    code, out = _run(["run", "--date", "2026-11-01", "--lake-root", root, "--landing", str(sample_landing()),
                      *run_options])
    assert code == 2 and "expected the bucket 'no-such-bucket' of the lake root 's3://no-such-bucket/lake'" in out
    assert "Traceback" not in out
    code, out = _run(["tables", "--lake-root", root])
    assert code == 2 and "to exist, it does not" in out
    code, out = _run(["run", "--date", "2026-11-01", "--lake-root", str(tmp_path / "lake"), "--landing",
                      "s3://no-such-bucket/landing", *run_options])
    assert code == 2 and "expected the bucket 'no-such-bucket' of the landing root 's3://no-such-bucket/landing'" in out
    assert "Traceback" not in out and not [f for f in (tmp_path / "lake").rglob("*") if f.is_file()]
    code, out = _run(["generate", "--days", "1", "--out", "s3://no-such-bucket/landing"])
    assert code == 2 and "of the landing root 's3://no-such-bucket/landing' to exist" in out


def test_an_s3_root_without_credentials_fails_clearly_and_writes_nothing(aws, sample_landing, run_options,
                                                                         monkeypatch, tmp_path, prefect_harness):
    boto3.client("s3").create_bucket(Bucket="lake-no-creds")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out = _run(["run", "--date", "2026-11-01", "--lake-root", "s3://lake-no-creds/lake", "--landing",
                      str(sample_landing()), *run_options])
    assert code == 2 and "expected AWS credentials to reach the lake root 's3://lake-no-creds/lake'" in out
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert boto3.client("s3").list_objects_v2(Bucket="lake-no-creds").get("KeyCount") == 0


def test_an_unreachable_s3_endpoint_fails_clearly(aws, sample_landing, run_options, monkeypatch, prefect_harness):
    from lakehouse.testing.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    code, out = _run(["run", "--date", "2026-11-01", "--lake-root", "s3://lake-bucket/lake", "--landing",
                      str(sample_landing()), *run_options])
    assert code == 2 and "expected S3 at http://127.0.0.1:" in out and "check the network" in out
    code, out = _run(["status", "--lake-root", "s3://lake-bucket/lake"])
    assert code == 2 and "for the lake root 's3://lake-bucket/lake'" in out
    code, out = _run(["show", "gold.fact_orders", "--lake-root", "s3://lake-bucket/lake"])
    assert code == 2 and "for the lake root 's3://lake-bucket/lake'" in out
