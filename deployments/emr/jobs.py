"""EMR Serverless job runs through boto3: submit one, poll it with backoff, cancel it, find its driver log.

boto3 retries throttling and transient API errors itself (``standard`` retry mode); this module adds the
waiting: the first poll after ``emr.poll_seconds``, doubling up to ``emr.poll_max_seconds``. If the waiting
is interrupted (the Prefect run is cancelled, the worker sends SIGTERM, Ctrl-C) the job run is cancelled
before the interruption goes on, so no job keeps writing to the lake behind a run that says it stopped.
"""

from __future__ import annotations

import gzip
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lakehouse.deployments.emr import S3Location
from lakehouse.deployments.emr.package import ShippedCode
from lakehouse.deployments.settings import EmrSettings

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
# SUBMITTED, PENDING, SCHEDULED, QUEUED, RUNNING and CANCELLING are waited on (as is any state AWS adds later).
PYTHON_ENV_ALIAS = "environment"
ARCHIVE_ALIAS = "lakehouse"  # the folder the code archive is extracted to; the entry point is told (--code-dir)
_SAFE_CONF = re.compile(r"^\S+$")


class EmrJobError(RuntimeError):
    """A job run could not be submitted or followed; the message says which and why."""


@dataclass(frozen=True)
class JobRunResult:
    job_run_id: str
    state: str
    details: str
    driver_log: str  # URI of the driver's stderr (gzip) under emr.log_uri
    seconds: float


class JobRuns:
    """Job runs of one EMR Serverless application (``settings.application_id``)."""

    def __init__(self, settings: EmrSettings, *, emr: Any = None, s3: Any = None) -> None:
        self.settings = settings.require()
        self.emr = emr or aws_client("emr-serverless", settings.region)
        self.s3 = s3 or aws_client("s3", settings.region)

    def spark_submit_parameters(self, code: ShippedCode) -> str:
        """``--conf`` pairs: the code archive (and the packed Python environment), Delta, driver environment.
        The executors import the code from the archive too (their Python tasks read the landing files)."""
        s = self.settings
        conf = dict(s.spark_conf)
        archives = [f"{code.archive_uri}#{ARCHIVE_ALIAS}"]
        conf["spark.executorEnv.PYTHONPATH"] = f"./{ARCHIVE_ALIAS}"
        if s.python_archive:
            archives.append(f"{s.python_archive}#{PYTHON_ENV_ALIAS}")
            python = f"./{PYTHON_ENV_ALIAS}/bin/python"
            conf |= {"spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": python,
                     "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": python, "spark.executorEnv.PYSPARK_PYTHON": python}
        conf["spark.archives"] = ",".join(archives)
        conf |= {f"spark.emr-serverless.driverEnv.{k}": v for k, v in s.driver_env.items()}
        bad = [f"{k}={v}" for k, v in conf.items() if not (_SAFE_CONF.match(k) and _SAFE_CONF.match(v))]
        if bad:
            msg = f"expected Spark conf keys and values without whitespace (sparkSubmitParameters), got {bad}"
            raise EmrJobError(msg)
        return " ".join(f"--conf {k}={v}" for k, v in conf.items())

    def start(self, *, name: str, code: ShippedCode, arguments: Sequence[str], client_token: str,
              tags: Mapping[str, str]) -> str:
        """Start a job run of ``code``'s entry point with ``arguments``; its id. The same ``client_token``
        returns the same job run (a resubmission after a lost response starts nothing new)."""
        s = self.settings
        try:
            response = self.emr.start_job_run(
                applicationId=s.application_id, clientToken=client_token, executionRoleArn=s.execution_role_arn,
                name=name, executionTimeoutMinutes=s.timeout_minutes, tags=dict(tags),
                jobDriver={"sparkSubmit": {"entryPoint": code.entrypoint_uri,
                                           "entryPointArguments": [*arguments, "--code-dir", ARCHIVE_ALIAS],
                                           "sparkSubmitParameters": self.spark_submit_parameters(code)}},
                configurationOverrides={"monitoringConfiguration": {
                    "s3MonitoringConfiguration": {"logUri": s.log_uri.rstrip("/") + "/"}}},
            )
        except Exception as exc:
            msg = (f"could not start an EMR Serverless job run on application {s.application_id} "
                   f"({s.region}): {exc}")
            raise EmrJobError(msg) from exc
        return response["jobRunId"]

    def state(self, job_run_id: str) -> tuple[str, str]:
        run = self.emr.get_job_run(applicationId=self.settings.application_id, jobRunId=job_run_id)["jobRun"]
        return run["state"], run.get("stateDetails") or ""

    def cancel(self, job_run_id: str) -> None:
        self.emr.cancel_job_run(applicationId=self.settings.application_id, jobRunId=job_run_id)

    def driver_log(self, job_run_id: str) -> str:
        """Where EMR Serverless writes the driver's stderr for this job run (AWS's layout under the log URI)."""
        return S3Location.parse(self.settings.log_uri).join(
            "applications", self.settings.application_id, "jobs", job_run_id, "SPARK_DRIVER", "stderr.gz").uri

    def driver_log_tail(self, job_run_id: str, lines: int = 20) -> str | None:
        """The last ``lines`` lines of the driver's stderr, or None while EMR has not written it."""
        loc = S3Location.parse(self.driver_log(job_run_id))
        try:
            body = self.s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        except Exception:  # noqa: BLE001 - a missing or unreadable log is reported as missing
            return None
        text = gzip.decompress(body).decode("utf-8", errors="replace")
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])

    def wait(self, job_run_id: str, *, on_change: Callable[[str, str], None] | None = None,
             cancel_requested: Callable[[], bool] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> JobRunResult:
        """Poll until the job run ends. ``cancel_requested()`` is asked between polls; when it says yes the job
        run is cancelled and followed to CANCELLED. Any interruption cancels the job run, then goes on."""
        started = time.monotonic()
        delay, last, cancelling = self.settings.poll_seconds, "", False
        try:
            while True:
                state, details = self.state(job_run_id)
                if state != last and on_change:
                    on_change(state, details)
                last = state
                if state in TERMINAL_STATES:
                    return JobRunResult(job_run_id, state, details, self.driver_log(job_run_id),
                                        time.monotonic() - started)
                if not cancelling and cancel_requested and cancel_requested():
                    self.cancel(job_run_id)
                    log.warning("cancelled EMR job run %s: its flow run is being cancelled", job_run_id)
                    cancelling, delay = True, self.settings.poll_seconds
                sleep(delay)
                delay = min(delay * 2, self.settings.poll_max_seconds)
        except BaseException:
            if last not in TERMINAL_STATES:
                self._cancel_quietly(job_run_id)
            raise

    def _cancel_quietly(self, job_run_id: str) -> None:
        try:
            self.cancel(job_run_id)
            log.warning("cancelled EMR job run %s because its waiting was interrupted", job_run_id)
        except Exception:
            log.exception("could not cancel EMR job run %s; cancel it in the EMR console", job_run_id)


def aws_client(service: str, region: str) -> Any:
    """A boto3 client with the standard credential chain and standard retries (throttling, 5xx)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        msg = "expected boto3 for EMR Serverless (pip install '.[aws]'), it is not installed"
        raise EmrJobError(msg) from exc
    return boto3.client(service, region_name=region, config=Config(retries={"mode": "standard", "max_attempts": 8}))
