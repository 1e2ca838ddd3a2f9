"""The release task: gold audited at the versions the run wrote, then released all at once (or not at all)."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

import narwhals as nw
from prefect.artifacts import create_table_artifact

from lakehouse.backends.releases import Releases
from lakehouse.contracts.catalog import TableSpec, table
from lakehouse.tasks.context import RunContext, in_run, logger
from lakehouse.tasks.tracking import lake_task
from lakehouse.tasks.transforms import audit


class AuditFailedError(RuntimeError):
    """Tables failed their audit, so they were not released; the previous release stays current."""


@lake_task(lambda p: list(p["versions"]), name="release-gold")
def release_gold(ctx: RunContext, versions: dict[str, int], order_dates: list[date] | None = None) -> dict[str, Any]:
    """Audit the gold tables at the versions this run wrote; release them all at once only if every audit
    passes. On failure: a table artifact of the failing rules with sample rows, and an error naming them.

    With ``order_dates`` (an incremental run), the references of tables partitioned by order date are checked
    in those partitions only, unless a key they point at was lost since the current release: the other
    partitions passed the last audit and still point at keys that exist, so the check is as strict as a whole
    one. A lost key (a dimension row gone) sends the whole table through the check."""
    engine = ctx.engine()
    releases = Releases(ctx.lake())
    current = releases.current()

    def scan(name: str) -> nw.LazyFrame:
        return engine.scan(table(name), version=versions[name])

    def collect(frame: nw.LazyFrame) -> list[dict[str, Any]]:
        return engine.to_arrow(frame).to_pylist()

    # Each referenced table's key columns, read once at the version released (several references look them up).
    pointed: dict[str, set[str]] = {}
    for name in versions:
        for r in table(name).references:
            pointed.setdefault(r.table, set()).update(r.to)
    keys = {name: engine.materialize(scan(name).select(*sorted(columns))) for name, columns in pointed.items()}

    @functools.cache
    def lost_since_current(parent: str) -> bool:
        """Whether ``parent`` lost a combination of its referenced key columns since the current release (none
        lost: no value of any one of them was)."""
        assert current is not None  # partitions_only asks only when there is a release
        before = engine.scan(table(parent), version=current.versions[parent])
        return engine.count(audit.lost_keys(before, keys[parent], sorted(pointed[parent]))) > 0

    def partitions_only(spec: TableSpec) -> bool:
        if order_dates is None or current is None or spec.partition_by != ("order_date",):
            return False
        return not any(lost_since_current(r.table) for r in spec.references if r.table in current.versions)

    failures = []
    for name in versions:
        spec = table(name)
        scoped_to = order_dates if partitions_only(spec) else None

        def audited(n: str, child: str = name, dates: list[date] | None = scoped_to) -> nw.LazyFrame:
            if n != child:
                return keys[n]
            return scan(n) if dates is None else scan(n).filter(nw.col("order_date").is_in(dates))

        failures += audit.check_references(spec, audited, collect)
    for name in versions:
        before = current.versions.get(name) if current else None
        if table(name).max_row_drop is not None and before is not None:
            dropped = audit.check_row_drop(table(name), engine.count(scan(name)),
                                           engine.count(engine.scan(table(name), version=before)))
            failures += [dropped] if dropped else []
    if failures:
        if in_run():
            create_table_artifact(
                key="gold-audit-failures", description=f"Gold audit failures of run {ctx.run_id} for {ctx.run_date}",
                table=[{"table": f.table, "rule": f.rule, "failing_rows": f.failing_rows, "reason": f.reason,
                        "sample": "; ".join(str({k: str(v) for k, v in row.items()}) for row in f.sample)}
                       for f in failures])
        kept = f"release {current.release_id} stays current" if current else "there is still no gold release"
        msg = (f"gold not released for {ctx.run_date}: {len(failures)} audit rule(s) failed: "
               + "; ".join(f"{f.table} {f.rule} ({f.failing_rows} rows)" for f in failures) + f"; {kept}")
        raise AuditFailedError(msg)
    release = releases.publish(versions, run_id=ctx.run_id, run_date=ctx.run_date)
    logger().info("released %s: %s", release.release_id, release.versions)
    return {"stage": "release", "table": release.release_id, "rows_written": len(release.versions),
            "version": release.seq}
