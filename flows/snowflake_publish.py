"""Publish gold to Snowflake, reading each table at the version of a gold release.

``publish-snowflake`` publishes a release (the current one by default) on its own: ``lakehouse publish --to
snowflake [--release ID]`` or a deployment. The daily flow runs the same tasks after its release when
``snowflake.publish_with_daily`` is set. One task per table, each one batch ``<release id>:<table>``: a
batch already in the target's load audit is skipped, so publishing a release again changes nothing and a
retried run resumes with the tables not yet merged. Transient errors (network, timeouts, an unavailable
service) are retried by Prefect; SQL and schema errors are not (tasks/retry_policy.py). The load itself: backends/destinations/snowflake.py.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Release, Releases
from lakehouse.contracts.catalog import build_order
from lakehouse.deployments.settings import Settings, load_settings
from lakehouse.tasks.context import logger
from lakehouse.tasks.publish import publish_table


class ReleaseNotFoundError(LookupError):
    """The release asked for does not exist in the lake."""


def choose_release(settings: Settings, release_id: str | None) -> Release:
    """The release ``release_id``, or the current one; a clear error naming the releases there are."""
    history = Releases(Lake(settings.lake_root)).history()
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


def publish_release(env: str, overrides: dict[str, Any], release: Release, run_id: str) -> list[dict[str, Any]]:
    """Every table of ``release`` (dimensions first), one task each."""
    declared = build_order("gold")
    order = [t for t in declared if t in release.versions] + sorted(set(release.versions) - set(declared))
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
    logger().info("release %s to Snowflake %s.%s: %d table(s) merged, %d already published",
                          release.release_id, settings.snowflake.database, settings.snowflake.schema_,
                          len(merged), len(summaries) - len(merged))
    return summaries
