"""Publish gold to Snowflake, reading each table at the version of a gold release.

``publish-snowflake`` publishes a release (the current one by default) on its own: ``lakehouse publish --to
snowflake [--release ID]`` or a deployment. The daily flow runs the same tasks after its release when
``snowflake.publish_with_daily`` is set. One task per table, each one batch ``<release id>:<table>``: a
batch already in the target's load audit is skipped, so publishing a release again changes nothing and a
retried run resumes with the tables not yet merged. Transient errors (network, timeouts, an unavailable
service) are retried by Prefect; SQL and schema errors are not (flows/retry_policy.py). The load itself: backends/warehouse.py.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from prefect import flow, task
from prefect.runtime import flow_run

from backends import warehouse
from backends.releases import Release, Releases
from contracts.catalog import table
from deployments.secrets import resolve_secret
from deployments.settings import Settings, cached_settings, load_settings
from flows.retry_policy import retry_if_transient
from flows.stages import GOLD_ORDER, _logger


class ReleaseNotFoundError(LookupError):
    """The release asked for does not exist in the lake."""


def choose_release(settings: Settings, release_id: str | None) -> Release:
    """The release ``release_id``, or the current one; a clear error naming the releases there are."""
    history = Releases(settings.lake()).history()
    if not history:
        msg = (f"expected a gold release under {settings.lake_root!r} to publish, found none: run the daily flow "
               "(lakehouse run --date D) first")
        raise ReleaseNotFoundError(msg)
    if release_id is None:
        return history[-1]
    for release in history:
        if release.release_id == release_id:
            return release
    recent = ", ".join(r.release_id for r in history[-5:])
    msg = f"expected --release to be a gold release of {settings.lake_root!r} (latest: {recent}), got {release_id!r}"
    raise ReleaseNotFoundError(msg)


@task(name="publish-table", task_run_name="snowflake-{table_name}", retries=3, retry_delay_seconds=[2, 10, 30],
      retry_condition_fn=retry_if_transient)
def publish_table(env: str, overrides: dict[str, Any], release_id: str, table_name: str, version: int,
                  run_id: str) -> dict[str, Any]:
    """One gold table of a release into its Snowflake target: staged in bulk, merged with its audit row."""
    settings = cached_settings(env, tuple(sorted(overrides.items())))
    target = settings.snowflake.require()
    spec = table(table_name)
    with closing(warehouse.connect(target, resolve_secret(target.secret, what="snowflake.secret"))) as conn:
        done = warehouse.load_table(conn.cursor(), settings.lake(), spec, release_id=release_id, version=version,
                                    run_id=run_id, file_rows=target.stage_file_rows)
    if done["status"] == "skipped":
        _logger().info("%s: batch %s is in the load audit already, skipped", table_name, done["batch_id"])
    else:
        staged, stage_seconds = done["rows_staged"], done.pop("stage_seconds")
        _logger().info("%s: %d rows staged in %.2f s (%.0f rows/s), merged in %.2f s: %d inserted, %d updated, "
                       "%d deleted%s", table_name, staged, stage_seconds, staged / max(stage_seconds, 1e-9),
                       done["seconds"] - stage_seconds, done["inserted"], done["updated"], done["deleted"],
                       f"; columns added: {', '.join(done['added'])}" if done["added"] else "")
    return {"stage": "snowflake", "table": table_name, **done}


def publish_release(env: str, overrides: dict[str, Any], release: Release, run_id: str) -> list[dict[str, Any]]:
    """Every table of ``release`` (dimensions first), one task each."""
    order = [t for t in GOLD_ORDER if t in release.versions] + sorted(set(release.versions) - set(GOLD_ORDER))
    return [publish_table(env, overrides, release.release_id, name, release.versions[name], run_id)
            for name in order]


@flow(name="publish-snowflake", log_prints=True)
def publish_snowflake(env: str = "local", lake_root: str | None = None,
                      release_id: str | None = None) -> list[dict[str, Any]]:
    """Publish a gold release (default: the current one) to Snowflake. Connection settings come from
    ``snowflake.*``; the password or private key from the secret ``snowflake.secret`` points at."""
    overrides = {"lake_root": lake_root} if lake_root else {}
    settings = load_settings(env, **overrides)
    settings.snowflake.require()
    release = choose_release(settings, release_id)
    summaries = publish_release(env, overrides, release, str(flow_run.get_id() or "local"))
    merged = [s for s in summaries if s["status"] == "merged"]
    _logger().info("release %s to Snowflake %s.%s: %d table(s) merged, %d already published",
                          release.release_id, settings.snowflake.database, settings.snowflake.schema_,
                          len(merged), len(summaries) - len(merged))
    return summaries
