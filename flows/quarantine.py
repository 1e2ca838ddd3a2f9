"""Replaying quarantined silver rows after a fix (late reference data, a corrected rule, a new FX rate).

A replay takes the quarantined rows of one silver table (optionally of one rule) that no replay has accepted
yet, fetches their original bronze rows (same ``_record_hash``, same ingest date), and sends them through
the same conform step as the daily flow with today's rules and reference tables. Rows that now pass are
merged into silver by key (the latest ``updated_at`` still wins, so an old row never overwrites a newer one);
rows that still fail stay in quarantine once (its key is record hash, rule, file and occurrence). The accepted
rows' hashes are appended to ``<lake>/_replays/<entity>`` by the engine, one commit per ingest date, so no later
replay feeds them again. If the log holds rows this replay run accepted, gold is then rebuilt, audited and
released as in the daily flow: the partitions by order date that the accepted rows change (found as a daily
run's plan finds them), the other gold tables whole.

Exact duplicates (``duplicate.exact``) are never replayed: their first copy is already in silver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from lakehouse.backends.lake import Lake
from lakehouse.tasks.caching import summary_of_state
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.replay import ReplayError, accepted_by, replay_table, replayable, replayed_order_dates
from lakehouse.tasks.silver import link_crm


@flow(name="replay-quarantine", flow_run_name="replay-{table_name}")
def replay_quarantine(table_name: str, rule: str | None = None, env: str = "local", backend: str | None = None,
                      lake_root: str | None = None, spark_remote: str | None = None) -> list[dict[str, Any]]:
    """Replay ``table_name``'s quarantined rows (of ``rule``), then, if any was accepted, rebuild, audit and
    release gold."""
    from lakehouse.backends.releases import Releases
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.daily import publish

    replayable(table_name)
    overrides = {k: v for k, v in {"backend": backend, "lake_root": lake_root, "spark_remote": spark_remote}.items()
                 if v is not None}
    current = Releases(Lake(load_settings(env, **overrides).lake_root)).current()
    if current is None:
        msg = "expected a gold release to replay into, found none: run the daily flow first (lakehouse run --date D)"
        raise ReplayError(msg)
    ctx = RunContext(env=env, run_date=current.run_date, run_id=str(flow_run.get_id() or "replay"),
                     started_at=datetime.now(UTC), overrides=overrides)
    summary = summary_of_state(replay_table(ctx, table_name, rule))
    engine = ctx.engine()  # one engine: rows it materialised are kept while it lives
    accepted = engine.materialize(accepted_by(engine, ctx, table_name, ctx.run_id))
    if not engine.count(accepted):  # this run's replay log rows (also those of an earlier attempt of it)
        return [summary]  # nothing changed in silver: gold and its release stay as they are
    links = summary_of_state(link_crm(ctx))
    # Gold partitioned by order date is rebuilt for the dates the accepted rows change; the rest whole.
    return [summary, links, *publish(ctx, order_dates=replayed_order_dates(engine, table_name, accepted))]
