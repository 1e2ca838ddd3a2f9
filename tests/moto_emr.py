"""moto's server on loopback, with EMR Serverless job runs that really run their driver.

moto records EMR Serverless job runs but runs nothing: each is SUCCESS the moment it is submitted. This
launcher starts the same moto server (S3, EMR Serverless, IAM, ... all of moto) and adds what the EMR service
does with a Spark job run, so the whole submission path can be tested:

- the job run goes SUBMITTED → SCHEDULED → RUNNING → SUCCESS | FAILED;
- the "driver" downloads the entry point and every ``spark.archives`` entry from moto's S3, extracts each
  archive into its working folder under its ``#alias``, and runs ``python <entry point> <arguments>`` with
  the job's ``spark.emr-serverless.driverEnv.*`` variables. This interpreter stands in for the packed Python
  environment; the Spark it uses is whatever ``LAKEHOUSE_SPARK__REMOTE`` names (Sail in the tests);
- exit 0 → SUCCESS; otherwise FAILED with EMR's wording and the last exception line;
- the driver's stdout and stderr are written gzipped to ``<logUri>/applications/<app>/jobs/<id>/SPARK_DRIVER/``;
- CancelJobRun → CANCELLING, the driver process is terminated → CANCELLED.

S3's conditional writes are atomic ("if multiple conditional writes occur for the same object name, the first
write operation to finish succeeds"); moto's are not: its threaded server checks ``If-Match``/``If-None-Match``
and then writes, so two requests racing with the same ETag can both pass the check. Here a conditional
``PutObject`` or ``DeleteObject`` checks and writes under one lock, as S3 does (the run lock's takeover of a
stale lease relies on it).

It also lists moto's service folders once, not on every request: moto's dispatcher asks whether the request's
host names a service by listing and stat-ing its ~180 package folders per request (about 3 ms of the 6-10 ms a
request costs here; a day of Spark on an S3 lake sends ~7,500 requests).

    python tests/moto_emr.py --port 5000 --workdir /tmp/emr-jobs
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
import shlex
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import boto3
import moto.backends
import moto.emrserverless.models as emr_models
from moto.emrserverless.exceptions import ValidationException
from moto.s3.responses import S3Response
from moto.server import main as moto_main

TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}
DRIVER_ENV = "spark.emr-serverless.driverEnv."


class Driver:
    def __init__(self, job: emr_models.JobRun, workdir: Path, endpoint: str) -> None:
        self.job, self.endpoint = job, endpoint
        self.dir = workdir / job.id
        self.proc: subprocess.Popen | None = None
        self.cancelled = threading.Event()

    def run(self) -> None:
        try:
            self._set("SCHEDULED")
            entry, args, conf = self._submit_parameters()
            self.dir.mkdir(parents=True)
            script = self._download(entry, self.dir)
            for spec in filter(None, conf.get("spark.archives", "").split(",")):
                uri, _, alias = spec.partition("#")
                self._extract(self._download(uri, self.dir / ".archives"), self.dir / (alias or Path(uri).name))
            if self.cancelled.is_set():
                self._set("CANCELLED")
                return
            env = {**os.environ, **{k[len(DRIVER_ENV):]: v for k, v in conf.items() if k.startswith(DRIVER_ENV)}}
            env.pop("PYSPARK_PYTHON", None)
            env.pop("PYSPARK_DRIVER_PYTHON", None)
            out, err = self.dir / "stdout", self.dir / "stderr"
            with out.open("wb") as o, err.open("wb") as e:
                self.proc = subprocess.Popen([sys.executable, str(script), *args], cwd=self.dir, env=env,
                                             stdout=o, stderr=e)
                self._set("RUNNING")
                if self.cancelled.is_set():
                    self.proc.terminate()
                rc = self.proc.wait()
            self._upload_logs(out, err)
            if self.cancelled.is_set():
                self._set("CANCELLED", "Job run was cancelled by the user.")
            elif rc == 0:
                self._set("SUCCESS")
            else:
                lines = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
                last = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
                self._set("FAILED", "Job failed, please check complete logs in configured logging destination. "
                                    f"ExitCode: {rc}. Last few exceptions: {last.strip()}")
        except Exception as exc:  # noqa: BLE001 - whatever breaks the driver fails the job run, as on EMR
            self._set("FAILED", f"Job failed before the driver started: {exc}")

    def cancel(self) -> None:
        self.cancelled.set()
        if self.job.state in ("SUBMITTED", "SCHEDULED", "PENDING"):
            return
        self._set("CANCELLING")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def _set(self, state: str, details: str | None = None) -> None:
        self.job.state = state
        self.job.state_details = details
        self.job.updated_at = emr_models.utcnow()

    def _submit_parameters(self) -> tuple[str, list[str], dict[str, str]]:
        spark = (self.job.job_driver or {})["sparkSubmit"]
        words = shlex.split(spark.get("sparkSubmitParameters") or "")
        conf = {}
        for flag, value in zip(words[::2], words[1::2], strict=False):
            if flag == "--conf":
                key, _, val = value.partition("=")
                conf[key] = val
        return spark["entryPoint"], list(spark.get("entryPointArguments") or []), conf

    def _s3(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def _download(self, uri: str, folder: Path) -> Path:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(key).name
        self._s3().download_file(bucket, key, str(target))
        return target

    @staticmethod
    def _extract(archive: Path, into: Path) -> None:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")

    def _upload_logs(self, out: Path, err: Path) -> None:
        monitoring = (self.job.configuration_overrides or {}).get("monitoringConfiguration", {})
        log_uri = monitoring.get("s3MonitoringConfiguration", {}).get("logUri")
        if not log_uri:
            return
        bucket, _, prefix = log_uri.removeprefix("s3://").partition("/")
        base = "/".join(p for p in (prefix.strip("/"), "applications", self.job.application_id, "jobs", self.job.id,
                                    "SPARK_DRIVER") if p)
        for f in (out, err):
            self._s3().put_object(Bucket=bucket, Key=f"{base}/{f.name}.gz", Body=gzip.compress(f.read_bytes()))


def install(workdir: Path, endpoint: str) -> None:
    drivers: dict[str, Driver] = {}
    start_job_run = emr_models.EMRServerlessBackend.start_job_run
    get_job_run = emr_models.EMRServerlessBackend.get_job_run

    def start(self, *args, **kwargs):
        job = start_job_run(self, *args, **kwargs)
        if job.id not in drivers:
            job.state = "SUBMITTED"
            drivers[job.id] = driver = Driver(job, workdir, endpoint)
            threading.Thread(target=driver.run, daemon=True).start()
        return job

    def cancel(self, application_id: str, job_run_id: str):
        job = get_job_run(self, application_id, job_run_id)
        if job.state in TERMINAL:
            msg = f"Job run {job_run_id} is in state {job.state} and cannot be cancelled."
            raise ValidationException(msg)
        drivers[job_run_id].cancel()
        return application_id, job_run_id

    emr_models.EMRServerlessBackend.start_job_run = start
    emr_models.EMRServerlessBackend.cancel_job_run = cancel


def atomic_conditional_writes() -> None:
    """A conditional PutObject or DeleteObject checks its condition and writes under one lock, as on S3."""
    guard = threading.Lock()

    def atomic(handler):
        @functools.wraps(handler)
        def run(self: S3Response, *args, **kwargs):
            if self.headers.get("If-Match") is None and self.headers.get("If-None-Match") is None:
                return handler(self, *args, **kwargs)
            with guard:
                return handler(self, *args, **kwargs)

        return run

    S3Response.put_object = atomic(S3Response.put_object)
    S3Response.delete_object = atomic(S3Response.delete_object)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    ns = parser.parse_args()
    install(ns.workdir, f"http://127.0.0.1:{ns.port}")
    atomic_conditional_writes()
    moto.backends.list_of_moto_modules = functools.cache(lambda listed=moto.backends.list_of_moto_modules: tuple(listed()))
    moto_main(["-H", "127.0.0.1", "-p", str(ns.port)])
