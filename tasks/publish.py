"""The Snowflake publish task: one gold table of a release into its Snowflake target (the load itself:
backends/destinations/snowflake.py). Transient errors are retried by Prefect, SQL and schema errors are not
(tasks/retry_policy.py). The flow that runs it: flows/snowflake_publish.py."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from prefect import task

from lakehouse.backends.destinations import snowflake
from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import table
from lakehouse.deployments.secrets import resolve_secret
from lakehouse.deployments.settings import cached_settings
from lakehouse.tasks.context import logger
from lakehouse.tasks.retry_policy import retry_if_transient


@task(name="publish-table", task_run_name="snowflake-{table_name}", retries=3, retry_delay_seconds=[2, 10, 30],
      retry_condition_fn=retry_if_transient)
def publish_table(env: str, overrides: dict[str, Any], release_id: str, table_name: str, version: int,
                  run_id: str) -> dict[str, Any]:
    """One gold table of a release into its Snowflake target: staged in bulk, merged with its audit row."""
    settings = cached_settings(env, tuple(sorted(overrides.items())))
    target = settings.snowflake.require()
    spec = table(table_name)
    with closing(snowflake.connect(target, resolve_secret(target.secret, what="snowflake.secret"))) as conn:
        done = snowflake.load_table(conn.cursor(), Lake(settings.lake_root), spec, release_id=release_id, version=version,
                                    run_id=run_id, file_rows=target.stage_file_rows)
    if done["status"] == "skipped":
        logger().info("%s: batch %s is in the load audit already, skipped", table_name, done["batch_id"])
    else:
        staged, stage_seconds = done["rows_staged"], done.pop("stage_seconds")
        logger().info("%s: %d rows staged in %.2f s (%.0f rows/s), merged in %.2f s: %d inserted, %d updated, "
                       "%d deleted%s", table_name, staged, stage_seconds, staged / max(stage_seconds, 1e-9),
                       done["seconds"] - stage_seconds, done["inserted"], done["updated"], done["deleted"],
                       f"; columns added: {', '.join(done['added'])}" if done["added"] else "")
    return {"stage": "snowflake", "table": table_name, **done}
