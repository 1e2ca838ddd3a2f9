"""The daily flow on EMR Serverless: each stage (ingest, refine, publish) is one Spark job run.

The flow ships the code (``deployments/emr/package.py``), then for each stage submits a job run whose driver
runs ``deployments/emr/entrypoint.py`` — the same stage flow the laptop runs, on the Spark engine — and
follows it. EMR states become Prefect states: SUCCESS → Completed, FAILED → Failed (with the driver log's
location and its last lines), CANCELLED → Cancelled. A stage that does not succeed stops the flow before the
next one. Cancelling the flow run cancels the job run it is waiting on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.states import Cancelled, Completed, Failed, State

from lakehouse.backends.run_lock import RunLock
from lakehouse.deployments.emr import package
from lakehouse.deployments.emr.jobs import JobRuns, aws_client
from lakehouse.deployments.settings import Settings, load_settings
from lakehouse.flows.daily import STAGES, dated_run_name, scheduled_date


@task(name="ship-code", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def ship_code(env: str, overrides: dict[str, Any]) -> package.ShippedCode:
    """Build the code archive and upload it (with the entry point) unless this exact code is already there."""
    emr = load_settings(env, **overrides).emr.require()
    shipped = package.ship(package.build(), emr.code_uri, aws_client("s3", emr.region))
    get_run_logger().info("code %s at %s (%d objects uploaded)", shipped.digest, shipped.archive_uri, shipped.uploaded)
    return shipped


@task(name="emr-stage", task_run_name="emr-{stage}-{run_date}", cache_policy=NO_CACHE)
def run_stage_on_emr(stage: str, run_date: date, env: str, overrides: dict[str, Any], code: package.ShippedCode,
                     run_id: str) -> State:
    """Run one stage as an EMR Serverless job run and wait for it; the EMR outcome as a Prefect state."""
    logger = get_run_logger()
    settings = load_settings(env, **overrides)
    jobs = JobRuns(settings.emr)
    job_run_id = jobs.start(
        name=f"lakehouse-{stage}-{run_date}", code=code, arguments=job_arguments(stage, run_date, run_id, settings),
        client_token=f"{run_id}-{stage}-{task_run.get_run_count()}",
        tags={"lakehouse:run-id": run_id, "lakehouse:stage": stage, "lakehouse:run-date": run_date.isoformat()},
    )
    logger.info("submitted %s for %s as EMR job run %s on application %s", stage, run_date, job_run_id,
                settings.emr.application_id)
    with _sigterm_seen() as terminated:
        result = jobs.wait(job_run_id, cancel_requested=lambda: terminated.is_set() or _flow_run_cancelling(),
                           on_change=lambda state, details: logger.info("EMR job run %s: %s %s", job_run_id,
                                                                        state, details))
    where = f"EMR job run {job_run_id} ({stage} {run_date})"
    if result.state == "SUCCESS":
        return Completed(message=f"{where} succeeded in {result.seconds:.0f} s",
                         data={"stage": stage, "job_run_id": job_run_id, "seconds": round(result.seconds, 1)})
    if result.state == "CANCELLED":
        return Cancelled(message=f"{where} was cancelled {result.details}".strip())
    tail = jobs.driver_log_tail(job_run_id)
    if tail:
        logger.error("last lines of the driver log %s:\n%s", result.driver_log, tail)
    return Failed(message=f"{where} {result.state}: {result.details or 'no details'}; "
                          f"driver log: {result.driver_log}")


def job_arguments(stage: str, run_date: date, run_id: str, settings: Settings) -> list[str]:
    """The entry point's arguments: local roots are made absolute (the driver's working folder differs)."""
    def root(value: str) -> str:
        return value if "://" in value else str(Path(value).resolve())

    return ["--stage", stage, "--date", run_date.isoformat(), "--run-id", run_id, "--env", settings.env,
            "--lake-root", root(settings.lake_root), "--landing-root", root(settings.landing_root)]


@contextmanager
def _sigterm_seen() -> Iterator[threading.Event]:
    """An event set when this process receives SIGTERM (a worker cancelling the run), alongside Prefect's own
    handler. Prefect turns SIGTERM into an exception wherever Python is; if that lands in a finaliser it is
    swallowed, and the event still makes the next poll cancel the job run."""
    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        seen.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flow_run_cancelling() -> bool:
    run_id = flow_run.get_id()
    if not run_id:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return bool(state and (state.is_cancelling() or state.is_cancelled()))


@flow(name="daily-lakehouse", flow_run_name=dated_run_name("emr"), log_prints=True)
def emr_daily_lakehouse(
    run_date: date | None = None,
    env: str = "emr",
    stages: list[str] | None = None,
    lake_root: str | None = None,
    landing_root: str | None = None,
) -> list[dict[str, Any]] | State:
    """Run the daily flow's stages for ``run_date`` (default: the date the run was scheduled for, UTC) on EMR
    Serverless (settings ``emr.*`` of ``env``). The same flow name as the in-process daily flow, so a deployment
    of either is ``daily-lakehouse/<deployment>``."""
    run_date = scheduled_date(run_date)
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        msg = f"expected stages among {list(STAGES)}, got {unknown}"
        raise ValueError(msg)
    overrides = {k: v for k, v in {"lake_root": lake_root, "landing_root": landing_root}.items() if v is not None}
    settings = load_settings(env, **overrides)
    settings.emr.require()
    run_id = str(flow_run.get_id() or "local")
    code = ship_code(env, overrides)
    done: list[dict[str, Any]] = []
    # The job runs write the lake: hold its run lock while they run, as the in-process daily flow does.
    with RunLock.of(settings).hold(run_id, f"daily-lakehouse-emr {run_date}",
                                  wait_seconds=settings.run_lock_wait_seconds, on_wait=get_run_logger().warning):
        for stage in stages:
            state = run_stage_on_emr(stage, run_date, env, overrides, code, run_id, return_state=True)
            if state.is_cancelled():
                return Cancelled(message=state.message)
            if not state.is_completed():
                return Failed(message=f"stage {stage} did not complete: {state.message}")
            done.append(state.result())
    create_table_artifact(key="daily-lakehouse-emr", table=done,
                          description=f"EMR Serverless job runs of the daily flow for {run_date}")
    return done
