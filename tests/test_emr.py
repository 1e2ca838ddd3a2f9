"""The EMR Serverless path against moto's server on loopback (tests/moto_emr.py runs each job run's driver for
real: the shipped archive, the entry point, the stage on Spark via Sail), with landing and lake on moto's S3.

Submit, poll, failure (driver log reported), cancel (by the Prefect run's state, and by SIGTERM as a worker
sends it), plus the code archive and the IAM policies. The job runs' success (a day of the daily flow on EMR,
every table equal to the laptop engine's) is tests/test_s3_lake.py's Spark test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from datetime import date
from pathlib import Path

import boto3
import pytest
from conftest import EMR_BUCKET, FLOW_DAYS, ROOT, s3_objects, upload

from lakehouse.deployments.emr import S3Location, package
from lakehouse.deployments.settings import SettingsError, load_settings

pytestmark = pytest.mark.slow

LANDING = f"s3://{EMR_BUCKET}/landing"  # the two generated days of ``daily_lakes``, uploaded once


@pytest.fixture(scope="module")
def s3_landing(moto_endpoint, daily_lakes):
    """The laptop engine's landing files in moto's S3, where the job runs read them: ``LANDING``."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    if EMR_BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=EMR_BUCKET)
    upload(s3, daily_lakes("polars")["landing"], LANDING)
    return LANDING


def test_the_code_archive_is_reproducible_and_ships_once(emr_app):
    first, second = package.build(), package.build()
    assert first.archive == second.archive and first.digest == second.digest
    names = zipfile.ZipFile(__import__("io").BytesIO(first.archive)).namelist()
    assert {"lakehouse/flows/daily.py", "lakehouse/deployments/emr.toml", "lakehouse/contracts/catalog.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    code_uri = f"s3://{EMR_BUCKET}/code-{time.time_ns()}"
    shipped = package.ship(first, code_uri, emr_app.s3)
    assert shipped.uploaded == 2
    assert package.ship(second, code_uri, emr_app.s3).uploaded == 0
    loc = S3Location.parse(shipped.archive_uri)
    assert emr_app.s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read() == first.archive
    assert shipped.entrypoint_uri.endswith(f"{first.digest}/entrypoint.py")


def test_a_changed_file_ships_as_new_code(tmp_path):
    for pkg in package.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    before = package.build(tmp_path)
    (tmp_path / "flows" / "__init__.py").write_text("# changed\n")
    assert package.build(tmp_path).digest != before.digest


def test_submission_needs_the_emr_settings(monkeypatch):
    for k in list(os.environ):
        if k.startswith("LAKEHOUSE_EMR__"):
            monkeypatch.delenv(k)
    with pytest.raises(SettingsError, match=r"emr.application_id, emr.execution_role_arn, emr.code_uri, emr.log_uri"):
        load_settings("local").emr.require()
    with pytest.raises(SettingsError, match="execution_role_arn"):
        load_settings("local", emr={"execution_role_arn": "my-role"})


def test_a_failed_job_run_fails_the_flow_and_says_where_the_driver_log_is(emr_app):
    from lakehouse.flows.emr import emr_daily_lakehouse

    lake = f"s3://{EMR_BUCKET}/failed/lake"
    state = emr_daily_lakehouse(run_date=date(2026, 11, 1), env="local", lake_root=lake,
                                landing_root="s3://no-landing-bucket/landing", return_state=True)
    assert state.is_failed()
    runs = emr_app.runs()
    assert [r["state"] for r in runs] == ["FAILED"], "the stages after a failed one are not submitted"
    job = runs[0]
    log_uri = f"s3://{EMR_BUCKET}/logs/applications/{emr_app.app}/jobs/{job['jobRunId']}/SPARK_DRIVER/stderr.gz"
    assert log_uri in state.message and job["jobRunId"] in state.message
    assert "expected the bucket 'no-landing-bucket' of the landing root" in emr_app.log(job["jobRunId"])
    # the executors import the shipped code from the archive Spark extracts for them (landing is read there)
    submitted = job["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"].split()
    assert "spark.executorEnv.PYTHONPATH=./lakehouse" in submitted and "spark.archives=" in " ".join(submitted)
    assert not [k for k in s3_objects(emr_app.s3, lake) if "_delta_log" in k], "nothing was written"


def test_a_missing_daily_delivery_fails_the_ingest_job_run_before_anything_is_written(emr_app, s3_landing):
    """The ingest stage's job run checks the deliveries where it reads the landing files, as the in-process
    flow does before its run lock: a daily entity without a file for the date stops it, naming the folder."""
    from lakehouse.flows.emr import emr_daily_lakehouse

    landing, lake = f"s3://{EMR_BUCKET}/partial/landing", f"s3://{EMR_BUCKET}/partial/lake"
    missing = f"snowflake/orders/{FLOW_DAYS[0]}/"
    for key in s3_objects(emr_app.s3, s3_landing):
        if not key.startswith(missing):
            emr_app.s3.copy_object(Bucket=EMR_BUCKET, Key=f"partial/landing/{key}",
                                   CopySource={"Bucket": EMR_BUCKET, "Key": f"landing/{key}"})
    state = emr_daily_lakehouse(run_date=date.fromisoformat(FLOW_DAYS[0]), env="local", lake_root=lake,
                                landing_root=landing, return_state=True)
    assert state.is_failed()
    runs = emr_app.runs()
    assert [(r["tags"]["lakehouse:stage"], r["state"]) for r in runs] == [("ingest", "FAILED")]
    log = emr_app.log(runs[0]["jobRunId"])
    assert f"expected a delivery for {FLOW_DAYS[0]}" in log and "snowflake.orders" in log
    assert f"{landing}/{missing}".rstrip("/") in log
    assert not [k for k in s3_objects(emr_app.s3, lake) if "_delta_log" in k], "nothing was written"


@pytest.fixture
def silent_spark():
    """A TCP listener that accepts and never answers: a driver that connects to it hangs as RUNNING."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"sc://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def wait_for_job(ctx, state: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = ctx.runs()
        if runs and runs[-1]["state"] == state:
            return runs[-1]
        time.sleep(0.2)
    pytest.fail(f"no job run reached {state}: {[r['state'] for r in ctx.runs()]}")


def test_cancelling_the_flow_run_cancels_the_job_run(emr_app, silent_spark, s3_landing):
    from prefect import get_client
    from prefect.states import Cancelling

    from lakehouse.flows.emr import emr_daily_lakehouse

    emr_app.driver_env(LAKEHOUSE_SPARK__REMOTE=silent_spark)
    outcome = {}

    def run() -> None:
        outcome["state"] = emr_daily_lakehouse(run_date=date(2026, 11, 1), env="local",
                                               lake_root=f"s3://{EMR_BUCKET}/cancel/lake", landing_root=s3_landing,
                                               return_state=True)

    thread = threading.Thread(target=run)
    thread.start()
    job = wait_for_job(emr_app, "RUNNING")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(job["tags"]["lakehouse:run-id"], Cancelling(), force=True)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert outcome["state"].is_cancelled(), outcome["state"]
    runs = emr_app.runs()
    assert [r["state"] for r in runs] == ["CANCELLED"], "cancelled, and no later stage submitted"


def test_sigterm_to_the_flow_process_cancels_the_job_run(emr_app, silent_spark, s3_landing, tmp_path):
    from prefect.settings import PREFECT_API_URL

    emr_app.driver_env(LAKEHOUSE_SPARK__REMOTE=silent_spark)
    script = ("from datetime import date; from lakehouse.flows.emr import emr_daily_lakehouse; "
              "emr_daily_lakehouse(run_date=date(2026, 11, 1), env='local', "
              f"lake_root='s3://{EMR_BUCKET}/sigterm/lake', landing_root={s3_landing!r})")
    log = tmp_path / "flow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    try:
        wait_for_job(emr_app, "RUNNING")
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    job = wait_for_job(emr_app, "CANCELLED", timeout=30)
    assert proc.returncode != 0
    assert "cancelled EMR job run" in log.read_text(), log.read_text()[-3000:]
    assert [r["jobRunId"] for r in emr_app.runs()] == [job["jobRunId"]]


def test_the_lake_paths_sent_to_the_driver_are_absolute(emr_app, tmp_path, monkeypatch):
    from lakehouse.flows.emr import job_arguments

    monkeypatch.chdir(tmp_path)
    settings = load_settings("local", lake_root="./lake", landing_root="s3://bucket/landing")
    args = job_arguments("refine", date(2026, 11, 1), "run-1", settings)
    assert args[args.index("--lake-root") + 1] == str(Path(tmp_path / "lake").resolve())
    assert args[args.index("--landing-root") + 1] == "s3://bucket/landing"
    assert args[args.index("--stage") + 1] == "refine" and args[args.index("--env") + 1] == "local"


def s3_resources(policy: dict) -> list[str]:
    out = []
    for st in policy["Statement"]:
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        out += [r for r in res if r.startswith("arn:aws:s3:::")]
    return out


def test_the_iam_policies_are_scoped_to_the_settings_prefixes(aws):
    from lakehouse.deployments.emr import iam

    settings = load_settings("emr", lake_root="s3://acme-lake/prod/lake", landing_root="s3://acme-landing/in",
                             emr={"application_id": "00abc", "execution_role_arn": "arn:aws:iam::123456789012:role/job",
                                  "code_uri": "s3://acme-lake/prod/code", "log_uri": "s3://acme-logs/emr"})
    execution, submitter = iam.render(settings, "execution"), iam.render(settings, "submitter")
    objects = {r for r in s3_resources(execution) if "/" in r.removeprefix("arn:aws:s3:::")}
    assert objects == {"arn:aws:s3:::acme-lake/prod/lake/*", "arn:aws:s3:::acme-landing/in/*",
                       "arn:aws:s3:::acme-lake/prod/code/*", "arn:aws:s3:::acme-logs/emr/*"}
    writes = {r for st in execution["Statement"] for r in [st["Resource"]]
              if {"s3:PutObject", "s3:DeleteObject"} & set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    assert writes == {"arn:aws:s3:::acme-lake/prod/lake/*", "arn:aws:s3:::acme-logs/emr/*"}, "landing and code are read-only"
    listing = [st["Condition"]["StringLike"]["s3:prefix"] for st in execution["Statement"] if st["Action"] == "s3:ListBucket"]
    assert listing == [["prod/lake", "prod/lake/*"], ["in", "in/*"]]
    assert "*" not in json.dumps(execution).replace("/*", "")
    passes = [st for st in submitter["Statement"] if st["Action"] == "iam:PassRole"]
    assert [st["Resource"] for st in passes] == ["arn:aws:iam::123456789012:role/job"]
    jobs = next(st for st in submitter["Statement"] if st["Sid"] == "JobRuns")
    assert jobs["Resource"][0] == "arn:aws:emr-serverless:us-east-1:123456789012:/applications/00abc"
    # moto's IAM validates both documents as real AWS would accept them.
    client = boto3.client("iam")
    for name, doc in {"execution": execution, "submitter": submitter}.items():
        arn = client.create_policy(PolicyName=f"lakehouse-{name}-{time.time_ns()}", PolicyDocument=json.dumps(doc))
        assert arn["Policy"]["Arn"].startswith("arn:aws:iam::123456789012:policy/lakehouse-")


def test_the_emr_commands_print_json_or_name_what_they_need():
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["emr", "policy", "execution", "--env", "emr"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["Statement"][0]["Resource"] == "arn:aws:s3:::CHANGE-ME-lake-bucket/lake/*"
    bad = runner.invoke(app, ["emr", "policy", "admin", "--env", "emr"])
    assert bad.exit_code == 2 and "expected a policy among ['execution', 'submitter']" in bad.output
    for command in (["policy", "execution"], ["ship"], ["run", "--date", "2026-11-01"]):
        local = runner.invoke(app, ["emr", *command, "--env", "local"])
        assert local.exit_code == 2 and "expected emr.application_id" in local.output, (command, local.output)
    stage = runner.invoke(app, ["emr", "run", "--date", "2026-11-01", "--stage", "silver", "--env", "emr"])
    assert stage.exit_code == 2 and "expected --stage among ['ingest', 'refine', 'publish']" in stage.output


def test_polls_back_off_doubling_up_to_the_cap_and_a_cancel_request_cancels(emr_app, silent_spark, s3_landing):
    from lakehouse.deployments.emr.jobs import JobRuns

    emr_app.driver_env(LAKEHOUSE_SPARK__REMOTE=silent_spark)
    lake = f"s3://{EMR_BUCKET}/backoff/lake"
    settings = load_settings("local", lake_root=lake, landing_root=s3_landing,
                             emr={**load_settings("local").emr.model_dump(), "poll_seconds": 0.1,
                                  "poll_max_seconds": 0.5})
    jobs = JobRuns(settings.emr)
    code = package.ship(package.build(), settings.emr.code_uri, emr_app.s3)
    job_id = jobs.start(name="backoff", code=code, client_token="backoff-1", tags={},
                        arguments=["--stage", "ingest", "--date", "2026-11-01", "--run-id", "t", "--env", "local",
                                   "--lake-root", lake, "--landing-root", s3_landing])
    wait_for_job(emr_app, "RUNNING")
    slept: list[float] = []
    seen: list[str] = []
    result = jobs.wait(job_id, sleep=lambda s: (slept.append(s), time.sleep(0.05)),
                       cancel_requested=lambda: len(slept) >= 6, on_change=lambda state, _: seen.append(state))
    assert result.state == "CANCELLED" and seen[0] == "RUNNING" and seen[-1] == "CANCELLED"
    assert slept[:6] == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5], "doubling from poll_seconds, capped at poll_max_seconds"
    assert slept[6] == 0.1, "after asking to cancel, polls start again from poll_seconds"
    assert result.driver_log.endswith(f"/jobs/{job_id}/SPARK_DRIVER/stderr.gz")
