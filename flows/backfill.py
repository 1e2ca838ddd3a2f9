"""Backfills: run the daily flow over a range of dates, in order, skipping dates already done.

A date is done when the run log ``<lake>/_ledger/runs`` has a finished run of it (backends/run_log.py), unless that run was
allowed to go without an entity's delivery and the delivery has come since. ``force`` runs
every date again, recomputing every task. Each date is one ``daily-lakehouse`` run (a subflow here), so it
takes the lake's run lock, resumes on retry and is released like any daily run. The flow reports progress
as a Prefect progress artifact (``backfill-progress``); ``lakehouse backfill`` shows a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from lakehouse.backends.lake import Lake
from lakehouse.backends.run_log import RunLog
from lakehouse.deployments.settings import Settings, load_settings
from lakehouse.flows.daily import daily_lakehouse

MAX_BACKFILL_DAYS = 3660


class BackfillRangeError(ValueError):
    """The date range of a backfill is empty or too long."""


def backfill_plan(settings: Settings, date_from: date, date_to: date, *, force: bool) -> list[tuple[date, bool]]:
    """Every date from ``date_from`` to ``date_to`` (inclusive) in order, with whether to skip it (done, no force)."""
    if date_to < date_from:
        msg = f"expected --from on or before --to, got {date_from} .. {date_to}"
        raise BackfillRangeError(msg)
    days = (date_to - date_from).days + 1
    if days > MAX_BACKFILL_DAYS:
        msg = f"expected at most {MAX_BACKFILL_DAYS} days in one backfill, got {days}; split the range"
        raise BackfillRangeError(msg)
    done = set() if force else _done(settings)
    return [(d, d in done) for d in (date_from + timedelta(days=i) for i in range(days))]


def _done(settings: Settings) -> set[date]:
    """The dates done: run to the end, and not allowed to go without an entity whose delivery has come since."""
    from lakehouse.backends.landing import missing_deliveries
    from lakehouse.backends.storage import root_path
    from lakehouse.contracts.landing import landing_entity

    done = set()
    for day, went_without in RunLog(Lake(settings.lake_root)).went_without().items():
        arrived = went_without and len(missing_deliveries(
            [landing_entity(e) for e in went_without], root_path(settings.landing_root), day)) < len(went_without)
        if not arrived:
            done.add(day)
    return done


@flow(name="backfill-lakehouse", flow_run_name="backfill-{date_from}-{date_to}")
def backfill(date_from: date, date_to: date, force: bool = False, env: str = "local", backend: str | None = None,
             lake_root: str | None = None, landing_root: str | None = None,
             spark_remote: str | None = None, allow_missing: list[str] | None = None) -> list[dict[str, Any]]:
    """Run ``daily-lakehouse`` for each date of the range in order; dates already done are skipped unless ``force``."""
    settings = load_settings(env, backend=backend, lake_root=lake_root, landing_root=landing_root,
                             spark_remote=spark_remote)
    plan = backfill_plan(settings, date_from, date_to, force=force)
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="backfill-progress",
                                        description=f"Backfill {date_from} .. {date_to}: share of dates handled")
    def step(i: int, total: int, day: date, status: str) -> None:
        if status == "running":
            logger.info("%s (%d/%d): running", day, i, total)
            return
        if status == "skipped":
            logger.info("%s (%d/%d): already done, skipped (force=True runs it again)", day, i, total)
        update_progress_artifact(progress, 100.0 * i / total)

    return run_backfill(plan, lambda day: daily_lakehouse(
        run_date=day, env=env, backend=backend, lake_root=lake_root, landing_root=landing_root,
        spark_remote=spark_remote, force=force, allow_missing=allow_missing), step)


def run_backfill(plan: list[tuple[date, bool]], run_day: Callable[[date], object],
                 on_step: Callable[[int, int, date, str], None]) -> list[dict[str, Any]]:
    """Walk a backfill plan in order: ``run_day`` each date not skipped. ``on_step(i, total, day, status)`` is told
    before a date runs (``running``) and after each date (``ran`` or ``skipped``); the flow turns it into log lines
    and a progress artifact, ``lakehouse backfill`` into a progress bar. One entry per date: run date, status."""
    report = []
    for i, (day, skip) in enumerate(plan, 1):
        if not skip:
            on_step(i, len(plan), day, "running")
            run_day(day)
        status = "skipped" if skip else "ran"
        on_step(i, len(plan), day, status)
        report.append({"run_date": day, "status": status})
    return report
