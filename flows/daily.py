"""The daily flow: ingest (bronze) → refine (silver) → publish (gold), for one run date.

Flows only wire tasks: each stage is a subflow of coarse tasks (one per table) that pass table names and
summaries, never frames. Every run writes a summary table artifact.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from lakehouse.backends import landing
from lakehouse.backends.lake import Lake
from lakehouse.backends.run_lock import RunLock
from lakehouse.backends.run_log import RunLog
from lakehouse.contracts.catalog import build_order, conform_order
from lakehouse.contracts.landing import LANDING_ENTITIES
from lakehouse.deployments.secrets import use_aws_credentials_block
from lakehouse.deployments.settings import known_entities
from lakehouse.tasks.bronze import ingest_entity
from lakehouse.tasks.caching import resumable
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.extract import acknowledge_stream, extract_entity
from lakehouse.tasks.gates import check_gate
from lakehouse.tasks.gold import build_gold, plan_gold
from lakehouse.tasks.release import release_gold
from lakehouse.tasks.silver import link_crm, refine_table
from lakehouse.tasks.tracking import recorded


@flow(name="ingest", flow_run_name="ingest-{ctx.run_date}")
def ingest(ctx: RunContext) -> list[dict[str, Any]]:
    """Bronze: every landing entity's new files for the run date, then the bronze gates."""
    with recorded(ctx):
        sources = ctx.settings().sources
        summaries = []
        for e in LANDING_ENTITIES:
            pulled = sources.kind(e.name) == "connector"
            if pulled:  # pulled from its system into landing files first
                resumable(extract_entity, ctx)(ctx, e.name)
            summaries.append(resumable(ingest_entity, ctx)(ctx, e.name))
            if pulled and e.stream:
                resumable(acknowledge_stream, ctx)(ctx, e.name)
        resumable(check_gate, ctx)(ctx, "bronze", summaries)
    return summaries


@flow(name="refine", flow_run_name="refine-{ctx.run_date}")
def refine(ctx: RunContext) -> list[dict[str, Any]]:
    """Silver: conform each entity's bronze batch, link customers to the CRM, then check the silver gates."""
    with recorded(ctx):
        summaries = [resumable(refine_table, ctx)(ctx, name) for name in conform_order()]
        summaries.append(resumable(link_crm, ctx)(ctx))
        resumable(check_gate, ctx)(ctx, "silver", summaries)
    return summaries


@flow(name="publish", flow_run_name="publish-{ctx.run_date}")
def publish(ctx: RunContext, *, whole: bool = False, order_dates: list[date] | None = None) -> list[dict[str, Any]]:
    """Gold: the star schema and marts built from silver (the order-date partitions the run's batches changed,
    or those of ``order_dates``, or everything when ``whole``), audited, then released all at once."""
    with recorded(ctx):
        if whole:
            order_dates = None
        elif order_dates is None:
            order_dates = resumable(plan_gold, ctx)(ctx)
        summaries = [resumable(build_gold, ctx)(ctx, name, order_dates) for name in build_order("gold")]
        summaries.append(resumable(release_gold, ctx)(ctx, {s["table"]: s["version"] for s in summaries},
                                                      order_dates))
    return summaries


# The daily flow's stages in order; an EMR job run runs one of them (deployments/emr/entrypoint.py).
STAGES = {"ingest": ingest, "refine": refine, "publish": publish}


def scheduled_date(run_date: date | None) -> date:
    """``run_date``, or for a run without one (a scheduled run of a deployment) the UTC date the run was
    scheduled for: the same date on every retry of that run."""
    if run_date is not None:
        return run_date
    scheduled = flow_run.scheduled_start_time
    return scheduled.astimezone(UTC).date() if scheduled is not None else datetime.now(UTC).date()


def dated_run_name(prefix: str) -> Callable[[], str]:
    """A flow run name ``<prefix>-<run date>``, the date resolved as ``scheduled_date`` does."""

    def name() -> str:
        given = flow_run.parameters.get("run_date")
        return f"{prefix}-{scheduled_date(date.fromisoformat(given) if isinstance(given, str) else given)}"

    return name


@flow(name="daily-lakehouse", flow_run_name=dated_run_name("daily"), log_prints=True)
def daily_lakehouse(
    run_date: date | None = None,
    env: str = "local",
    backend: str | None = None,
    lake_root: str | None = None,
    landing_root: str | None = None,
    spark_remote: str | None = None,
    spark_master: str | None = None,
    force: bool = False,
    allow_missing: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the whole pipeline for ``run_date`` (default: the date the run was scheduled for, UTC). Unset options
    come from the environment's settings. With
    ``snowflake.publish_with_daily`` set, the gold release the run makes is then published to Snowflake.

    ``backend="spark"`` runs on Spark: ``spark_remote`` (Spark Connect URL), ``spark_master`` (classic session),
    or neither for an embedded Sail server. One run writes a lake at a time (the lake's run lock; a second run
    waits). A retry of a failed run resumes after the last task that completed (tasks/caching.py); ``force``
    recomputes every task.

    Before anything is written, every entity delivered daily (contracts/landing.py ``DELIVERIES``) must have a
    file for the date, else the run stops naming the folders it looked in; ``allow_missing`` (and the setting
    ``sources.allow_missing``) names entities that may be missing this time (the run log records them).
    """
    given = {"backend": backend, "lake_root": lake_root, "landing_root": landing_root, "spark_remote": spark_remote,
             "spark_master": spark_master}
    overrides = {k: v for k, v in given.items() if v is not None}
    with _own_heartbeat():
        return _run_daily(scheduled_date(run_date), env, overrides, force=force, allow_missing=allow_missing)


def _run_daily(run_date: date, env: str, overrides: dict[str, Any], *, force: bool,
               allow_missing: list[str] | None) -> list[dict[str, Any]]:
    ctx = RunContext(env=env, run_date=run_date, run_id=str(flow_run.get_id() or "local"),
                     started_at=datetime.now(UTC), overrides=overrides, force=force)
    settings = ctx.settings()
    if settings.aws_credentials_block:
        use_aws_credentials_block(settings.aws_credentials_block)
    settings.require_hmac_key()
    settings.sources.require_connectors()
    Lake(settings.lake_root).check_writable()
    logger = get_run_logger()
    missing = require_deliveries(ctx, allow_missing or [], logger.warning)

    with RunLock.of(settings).hold(ctx.run_id, f"daily-lakehouse {run_date}",
                                  wait_seconds=settings.run_lock_wait_seconds, on_wait=logger.warning) as held:
        with _stage_heartbeats_off():
            summaries = ingest(ctx) + refine(ctx) + publish(ctx)
        release = next((s["table"] for s in summaries if s["stage"] == "release"), None)
        RunLog(Lake(settings.lake_root)).record(
            run_date=run_date, run_id=ctx.run_id, flow="daily-lakehouse", backend=settings.backend,
            release_id=release, locked_at=datetime.fromisoformat(held["acquired_at"]),
            finished_at=datetime.now(UTC), forced=force, missing=sorted(m.entity for m in missing))
    if settings.snowflake.publish_with_daily and release is not None:
        from lakehouse.flows.snowflake_publish import choose_release, publish_release

        summaries += publish_release(env, overrides, choose_release(settings, release), ctx.run_id)
    create_table_artifact(
        key="daily-lakehouse-summary", table=[_artifact_row(s) for s in summaries],
        description=f"Daily lakehouse run for {run_date}: rows per table per stage, quarantined rows by rule.",
    )
    incidents = incidents_markdown(run_date, summaries)
    if incidents:  # in full: the table artifact's cells are cut short in the UI
        create_markdown_artifact(key="daily-lakehouse-incidents", markdown=incidents,
                                 description=f"Refused files and quarantined rows by rule for {run_date}")
    quarantined = sum(s.get("quarantined", 0) for s in summaries)
    refused = [f for s in summaries for f in s.get("refused", [])]
    logger.info("run %s for %s done: %d tables written, %d rows quarantined, %d file(s) refused%s",
                ctx.run_id, run_date, len(summaries), quarantined, len(refused),
                f" ({', '.join(refused)}: fix and run the date again)" if refused else "")
    return summaries


def _stage_heartbeats_off() -> Any:
    """The stages' subflow runs send no heartbeats of their own: the daily run's heartbeat covers the process
    they run in, and Prefect waits up to a second for a flow's heartbeat thread to stop at its end (a
    second per stage on every run)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


# The heartbeat interval (seconds) of a daily run whose caller turned Prefect's own heartbeat off
# (``prompt_heartbeats``); None: Prefect's engine sends the run's heartbeats, if its settings say so.
_OWN_HEARTBEAT: contextvars.ContextVar[int | None] = contextvars.ContextVar("lakehouse_own_heartbeat", default=None)


@contextlib.contextmanager
def prompt_heartbeats() -> Iterator[None]:
    """For a caller that waits on the daily flow's end (the CLI): the flow run's heartbeat (the event
    ``prefect.flow-run.heartbeat`` every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds, what Prefect's zombie
    detection watches) is sent by the flow itself from a thread that stops the moment the run ends. Prefect's own
    heartbeat thread sleeps in one-second steps and the flow's end waits for it: 0-1 s on every run. Heartbeats
    turned off in the settings stay off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    every = get_current_settings().flows.heartbeat_frequency
    if every is None:
        yield
        return
    token = _OWN_HEARTBEAT.set(max(every, 30))  # Prefect's minimum interval
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
    finally:
        _OWN_HEARTBEAT.reset(token)


@contextlib.contextmanager
def _own_heartbeat() -> Iterator[None]:
    """Send the running flow run's heartbeats while the block runs, when ``prompt_heartbeats`` asked for them:
    the event Prefect's engine sends (the run, its flow, deployment and tags), first at once, then every interval;
    its payload names the interval."""
    from prefect import __version__
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.related import tags_as_related_resources

    every = _OWN_HEARTBEAT.get()
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if every is None or run is None:
        yield
        return
    resource = {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.name": run.name or "",
                "prefect.version": __version__}
    related: list[Any] = [{"prefect.resource.id": f"prefect.flow.{run.flow_id}", "prefect.resource.role": "flow",
                           "prefect.resource.name": context.flow.name if context.flow else ""}]
    if run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    related += tags_as_related_resources(set(run.tags or []))
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related,
                           payload={"interval_seconds": every})
            except Exception:  # noqa: BLE001 - a missed heartbeat must not fail the run
                get_run_logger().debug("Failed to emit heartbeat", exc_info=True)
            if stop.wait(every):
                return

    # The thread sees this context's settings (the API URL), as Prefect's heartbeat thread does.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), daemon=True,
                              name="lakehouse-flow-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def require_deliveries(ctx: RunContext, allow_missing: list[str],
                       warn: Callable[..., None]) -> list[landing.MissingDelivery]:
    """Stop the run before it writes anything when an entity delivered daily has no file for the run date
    (``MissingDeliveryError`` naming the folders), unless allowed (``allow_missing`` or the setting
    ``sources.allow_missing``: ``warn`` is told). The missing deliveries the run goes without."""
    settings = ctx.settings()
    allowed = set(settings.sources.allow_missing) | set(known_entities(allow_missing))
    expected = [e for e in LANDING_ENTITIES if settings.sources.kind(e.name) == "files"]
    missing = landing.missing_deliveries(expected, ctx.landing_dir(), ctx.run_date)
    for m in missing:
        if m.entity in allowed:
            warn("%s: no delivery for %s (%s: %s); allowed missing, the run goes on", m.entity, ctx.run_date,
                 m.folder, m.found)
    stopping = [m for m in missing if m.entity not in allowed]
    if stopping:
        raise landing.MissingDeliveryError(landing.missing_message(stopping, ctx.run_date))
    return missing


def incidents_markdown(run_date: date, summaries: list[dict[str, Any]]) -> str:
    """The run's refused landing files and quarantined rows by table and rule, as Markdown ('' if none)."""
    refused = [(s["table"], f) for s in summaries for f in s.get("refused", [])]
    rules = [(s["table"], rule, n) for s in summaries for rule, n in sorted((s.get("rules") or {}).items()) if n]
    if not refused and not rules:
        return ""
    parts = [f"# What happened on {run_date}"]
    if refused:
        parts.append("## Landing files refused (nothing of them ingested: fix each and run the date again)")
        parts += [f"- `{f}` ({t}); reason: `lakehouse quarantine list` or the report" for t, f in refused]
    if rules:
        parts.append("## Rows quarantined by rule")
        parts.append("| table | rule | rows |\n|---|---|---:|\n" + "\n".join(f"| {t} | {r} | {n:,} |" for t, r, n in rules))
    return "\n\n".join(parts) + "\n"


def _artifact_row(s: dict[str, Any]) -> dict[str, Any]:
    rules = ", ".join(f"{k}: {v}" for k, v in sorted(s.get("rules", {}).items()))
    return {"stage": s["stage"], "table": s["table"], "rows_in": s.get("rows_in", ""),
            "accepted": s.get("accepted", ""), "quarantined": s.get("quarantined", 0),
            "rows_written": s.get("rows_written", 0), "version": s.get("version"), "rules": rules,
            "refused_files": ", ".join(s.get("refused", []))}
