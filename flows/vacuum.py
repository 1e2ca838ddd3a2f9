"""Vacuum: delete the data files no version of a lake's tables still needs, so a lake that runs every day does
not keep every file it ever rewrote.

A merge or overwrite leaves the files it replaced in place (older versions read them). A vacuum deletes those
that were replaced more than ``vacuum_retention_hours`` ago (default 168, Delta's own default), except the
files of versions something of the project still reads:

* the current gold release, and every release made within the retention (``lakehouse rollback`` can go back
  to them; a rollback to an older one is refused when its files are gone, backends/releases.py);
* the versions the next incremental build of ``gold.dim_customer`` compares with (tasks/customer_grain.py).

A version whose log delta-rs already cleaned up (older than the table's log retention, 30 days by default)
cannot be read any more, so its files are not kept; the result names such versions.

delta-rs lists the files (a dry-run vacuum with ``keep_versions``) and the lake deletes them, whichever engine
wrote the table: no commit is added to a log another engine writes. The lake's run lock is held throughout, so
a vacuum never runs beside a daily run. ``lakehouse vacuum`` runs it; the ``vacuum`` deployment runs it weekly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Releases
from lakehouse.backends.run_lock import RunLock
from lakehouse.contracts.catalog import TableSpec, tables
from lakehouse.deployments.secrets import use_aws_credentials_block
from lakehouse.tasks import customer_grain
from lakehouse.tasks.context import RunContext


@dataclass(frozen=True)
class Vacuumed:
    """What a vacuum did to one table (or, in a dry run, would do)."""

    table: str
    files: int
    bytes: int
    kept_versions: tuple[int, ...]
    # Versions a release or a recorded build names whose log is gone: nothing can read them, so not kept.
    unreadable_versions: tuple[int, ...] = ()


def kept_versions(lake: Lake, *, retention_hours: float, now: datetime) -> dict[str, set[int]]:
    """Per table, the versions whose files a vacuum keeps (besides the latest, which it never touches)."""
    kept: dict[str, set[int]] = {}
    history = Releases(lake).history()
    horizon = now - timedelta(hours=retention_hours)
    for i, release in enumerate(history):
        if i == len(history) - 1 or release.released_at >= horizon:
            for name, version in release.versions.items():
                kept.setdefault(name, set()).add(version)
    for name, versions in customer_grain.pinned_versions(lake).items():
        kept.setdefault(name, set()).update(versions)
    return kept


def vacuum_lake(lake: Lake, *, retention_hours: float, dry_run: bool = False,
                on_table: Callable[[Vacuumed], None] | None = None) -> list[Vacuumed]:
    """Vacuum every table of the catalog that exists (see the module docstring); one ``Vacuumed`` per table.
    The caller holds the lake's run lock."""
    if retention_hours < 0:
        msg = f"expected a retention of 0 hours or more, got {retention_hours}"
        raise ValueError(msg)
    kept = kept_versions(lake, retention_hours=retention_hours, now=datetime.now(UTC))
    done = []
    for spec in existing_tables(lake):
        wanted = sorted(kept.get(spec.name, ()))
        keep = [v for v in wanted if lake.readable_version(spec, v)]
        # The log keeps naming removed files after a vacuum deleted them: count only those still there.
        present = lake.sizes_of(spec, lake.unreferenced_files(spec, retention_hours=retention_hours,
                                                              keep_versions=keep))
        if not dry_run:
            lake.delete_files(spec, sorted(present))
        result = Vacuumed(spec.name, len(present), sum(present.values()), tuple(keep),
                          tuple(v for v in wanted if v not in keep))
        done.append(result)
        if on_table is not None:
            on_table(result)
    return done


def existing_tables(lake: Lake) -> list[TableSpec]:
    """The catalog's tables (every layer, quarantine too) that exist in ``lake``."""
    return [spec for spec in tables() if lake.version(spec) is not None]


def held_vacuum(lock: RunLock, *, retention_hours: float, dry_run: bool, run_id: str, wait_seconds: float,
                on_wait: Callable[[str], None] | None = None,
                on_table: Callable[[Vacuumed], None] | None = None) -> list[Vacuumed]:
    """``vacuum_lake`` under the lake's run lock (waiting up to ``wait_seconds`` for a run to finish)."""
    what = f"vacuum (retention {retention_hours:g} h{', dry run' if dry_run else ''})"
    with lock.hold(run_id, what, wait_seconds=wait_seconds, on_wait=on_wait):
        return vacuum_lake(lock.lake, retention_hours=retention_hours, dry_run=dry_run, on_table=on_table)


@flow(name="vacuum-lakehouse", flow_run_name="vacuum", log_prints=True)
def vacuum_lakehouse(env: str = "local", lake_root: str | None = None, retention_hours: float | None = None,
                     dry_run: bool = False) -> list[dict[str, Any]]:
    """Delete the files no kept version of the lake's tables reads (flows/vacuum.py); ``retention_hours``
    defaults to the environment's ``vacuum_retention_hours``. A table artifact lists each table's files."""
    overrides = {"lake_root": lake_root} if lake_root is not None else {}
    ctx = RunContext(env=env, run_date=datetime.now(UTC).date(), run_id=str(flow_run.get_id() or "local"),
                     started_at=datetime.now(UTC), overrides=overrides)
    settings = ctx.settings()
    if settings.aws_credentials_block:  # an S3 lake reached with a prefect-aws block, as the daily flow does
        use_aws_credentials_block(settings.aws_credentials_block)
    hours = settings.vacuum_retention_hours if retention_hours is None else retention_hours
    logger = get_run_logger()
    done = held_vacuum(RunLock.of(settings), retention_hours=hours, dry_run=dry_run, run_id=ctx.run_id,
                       wait_seconds=settings.run_lock_wait_seconds, on_wait=logger.warning)
    for v in done:
        if v.unreadable_versions:
            logger.warning("%s: version(s) %s no longer readable (their log was cleaned up), files not kept",
                           v.table, ", ".join(map(str, v.unreadable_versions)))
    rows = [asdict(v) | {"kept_versions": ", ".join(map(str, v.kept_versions)),
                         "unreadable_versions": ", ".join(map(str, v.unreadable_versions))} for v in done]
    create_table_artifact(key="vacuum-lakehouse", table=rows,
                          description=f"Vacuum of {settings.lake_root} (retention {hours:g} h"
                                      f"{', dry run: nothing deleted' if dry_run else ''})")
    logger.info("%s %d file(s), %.1f MiB, in %d table(s)", "would delete" if dry_run else "deleted",
                sum(v.files for v in done), sum(v.bytes for v in done) / 2**20, len(done))
    return rows
