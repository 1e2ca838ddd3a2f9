"""Bronze tasks: a landing entity's new files of the run date appended to its bronze table (stream micro-batch
files in order, each commit checkpointed), refused files and deliveries logged."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import narwhals as nw

from lakehouse.backends import Engine, landing
from lakehouse.backends.checkpoints import Checkpoints
from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog, lake_log, refused_log
from lakehouse.contracts.catalog import TableSpec, bronze_for
from lakehouse.contracts.landing import LandingEntity, landing_entity
from lakehouse.tasks.context import RunContext, logger, summary_of
from lakehouse.tasks.quarantine import AccountingError, quarantined_on_run_date, write_quarantine
from lakehouse.tasks.retry_policy import LAKE_RETRIES
from lakehouse.tasks.tracking import lake_task
from lakehouse.tasks.transforms import bronze


@lake_task(lambda p: [f"landing:{p['entity_name']}"], name="bronze", task_run_name="bronze-{entity_name}",
           **LAKE_RETRIES)
def ingest_entity(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Append the run date's new landing files of one entity to its bronze table (a stream's micro-batch files
    in order, a few per commit, each commit checkpointed)."""
    entity = landing_entity(entity_name)
    spec = bronze_for(entity)
    engine = ctx.engine()
    root = ctx.landing_dir()
    folder = entity.folder(root, ctx.run_date)
    listed = landing.list_folder(entity, folder, root)
    if listed.ignored:
        logger().info("%s: not deliveries (hidden or marker files), left alone: %s", entity.name,
                       ", ".join(listed.ignored))
    if not listed.files and not listed.refused:
        logger().warning("no landing files for %s on %s under %s", entity.name, ctx.run_date, folder)
    _log_refused(ctx, entity, listed.refused)
    named_refused = [r["source_file"] for r in listed.refused]
    files = listed.files
    if entity.stream:
        summary = _ingest_stream(ctx, engine, entity, files)
        summary["refused"] = named_refused + summary["refused"]
        return summary
    # A file of the run date's folder can only have been ingested by a run of that date: look in its partition.
    done = files_in(engine, bronze.batch_for(engine.scan(spec), ctx.run_date))
    # An empty delivery adds no bronze row: the delivery log says it was read.
    empty = delivered(ctx, entity) - set(done)
    new = [(f, label) for f, label in files if label not in done and label not in empty]
    # A few files per commit (a connector's extract is many files): memory stays bounded, and a run that dies
    # between two commits resumes with the files not yet in bronze.
    step = ctx.settings().sources.bronze_files_per_commit
    rows = 0
    refused: list[str] = []
    version = engine.version(spec)
    for i in range(0, max(len(new), 1), step):
        n, _, version, bad = _append_files(ctx, engine, entity, new[i:i + step])
        rows, refused = rows + n, refused + bad
    return summary_of("bronze", spec, files=len(files), new_files=len(new),
                    **bronze_figures(ctx, engine, spec, sum(done.values()) + rows), rows_written=rows,
                    version=version, refused=named_refused + refused)


def bronze_figures(ctx: RunContext, engine: Engine, spec: TableSpec, accepted: int) -> dict[str, Any]:
    """The run date's bronze batch of ``spec`` (every file ingested for the date, by this run or before):
    ``accepted`` rows in bronze, the records its quarantine holds for the date (by rule), so a gate judges the
    same batch on a rerun as on the first run."""
    rules = quarantined_on_run_date(ctx, engine, spec)
    quarantined = sum(rules.values())
    return {"rows_in": accepted + quarantined, "accepted": accepted, "quarantined": quarantined, "rules": rules}


def _append_files(ctx: RunContext, engine: Engine, entity: LandingEntity, files: list[tuple[Path, str]]
                  ) -> tuple[int, int, int | None, list[str]]:
    """Read ``files`` and append their rows to bronze in one commit (unparseable records to quarantine first,
    refused files logged): rows, quarantined, bronze version, refused files."""
    spec = bronze_for(entity)
    read = engine.read_landing(entity, files) if files else None
    quarantined = 0
    if read is not None:  # the records that could not become rows, if any
        quarantined, _ = write_quarantine(engine, spec, read.rejects, ctx)
    rows, version = 0, engine.version(spec)
    if read is not None:
        # The append computes the rows once (it checks and writes what it computed), so no materialise here.
        stamped = bronze.with_lineage(read.rows, run_id=ctx.run_id, ingested_at=ctx.started_at, ingest_date=ctx.run_date)
        result = engine.append(spec, stamped)
        rows, version = result.rows, result.version
        if rows + quarantined != sum(read.records.values()):
            msg = (f"expected {sum(read.records.values())} input records of {entity.name} in bronze or quarantine, "
                   f"got {rows} rows and {quarantined} quarantined; nothing else was written for these files")
            raise AccountingError(msg)
    refused = read.refused.to_pylist() if read is not None else []
    _log_refused(ctx, entity, refused)
    read_whole = {label: n for label, n in (read.records if read is not None else {}).items()
                  if label not in {r["source_file"] for r in refused}}
    if read_whole:
        now = datetime.now(UTC)
        delivery_log(ctx.lake(), entity).append(
            [{"source_file": label, "records": n, "run_id": ctx.run_id, "run_date": ctx.run_date, "ingested_at": now}
             for label, n in sorted(read_whole.items())])
    return rows, quarantined, version, [r["source_file"] for r in refused]


def delivery_log(lake: Lake, entity: LandingEntity) -> LakeLog:
    """Every landing file of ``entity`` read into bronze, with its records (0: an empty "no changes" delivery,
    which adds no bronze row but counts for freshness)."""
    return lake_log(lake, "deliveries", source=entity.source, entity=entity.entity)


def delivered(ctx: RunContext, entity: LandingEntity) -> set[str]:
    """The landing files of ``entity`` for the run date recorded as read."""
    log = delivery_log(ctx.lake(), entity).table()
    if log is None:
        return set()
    return {r["source_file"] for r in log.select(["source_file", "run_date"]).to_pylist()
            if r["run_date"] == ctx.run_date}


def newest_delivery(lake: Lake, source: TableSpec) -> date | None:
    """The newest run date with a delivery to bronze table ``source``: its newest ingest partition, or a newer
    empty delivery from the delivery log."""
    newest = lake.newest_partition(source, "_ingest_date")  # from the Delta log: no data read
    dates = [date.fromisoformat(newest)] if newest else []
    assert source.landing is not None, f"{source.name} is not a bronze table"
    log = delivery_log(lake, source.landing).table()
    if log is not None and log.num_rows:
        dates.append(max(log.column("run_date").to_pylist()))
    return max(dates) if dates else None


def _log_refused(ctx: RunContext, entity: LandingEntity, refused: list[dict[str, str]]) -> None:
    """Name each refused file in the run's log and append it to the entity's refused log."""
    for r in refused:
        logger().error("refused %s (%s): %s", r["source_file"], r["problem"], r["reason"])
    if refused:
        now = datetime.now(UTC)
        refused_log(ctx.lake(), entity.source, entity.entity).append(
            [{**r, "run_id": ctx.run_id, "run_date": ctx.run_date, "refused_at": now} for r in refused])


def _ingest_stream(ctx: RunContext, engine: Engine, entity: LandingEntity,
                   files: list[tuple[Path, str]]) -> dict[str, Any]:
    """Apply a stream's micro-batch files not yet in its checkpoint, in order, ``stream_commit_max_files`` per
    bronze commit, each commit followed by its checkpoint row (backends/checkpoints.py: exactly once)."""
    spec = bronze_for(entity)
    settings = ctx.settings()
    checkpoints = Checkpoints(Lake(settings.lake_root), entity)
    applied = checkpoints.applied()
    pending = [(f, label) for f, label in files if label not in applied]
    # Written by a run that died before its checkpoint row: in bronze already, so record them, never rewrite.
    in_bronze = files_in(engine, bronze.batch_for(engine.scan(spec), ctx.run_date))
    orphaned = [(f, label) for f, label in pending if label in in_bronze]
    if orphaned:
        labels = [label for _, label in orphaned]
        checkpoints.record(labels, [_lines(f) for f, _ in orphaned], rows=sum(in_bronze[x] for x in labels),
                           quarantined=0,
                           bronze_version=engine.version(spec) or 0, recovered=True, run_id=ctx.run_id,
                           run_date=ctx.run_date)
        logger().warning("%s: %d micro-batch file(s) were in bronze but not checkpointed (a run died between the "
                          "two); checkpointed them without writing them again: %s", entity.name, len(labels),
                          ", ".join(labels))
    todo = [(f, label) for f, label in pending if label not in in_bronze]
    step = settings.stream_commit_max_files
    rows = 0
    refused: list[str] = []
    version = engine.version(spec)
    for i in range(0, len(todo), step):
        chunk = todo[i:i + step]
        n, q, version, bad = _append_files(ctx, engine, entity, chunk)
        refused += bad
        # A refused file is not checkpointed: once fixed, a rerun of its date applies it.
        applied_now = [(f, label) for f, label in chunk if label not in bad]
        if applied_now:
            checkpoints.record([label for _, label in applied_now], [_lines(f) for f, _ in applied_now], rows=n,
                               quarantined=q,
                               bronze_version=version or 0, recovered=False, run_id=ctx.run_id, run_date=ctx.run_date)
        rows += n
        logger().info("%s: applied micro-batch files %d-%d of %d (%d rows)", entity.name, i + 1,
                       i + len(chunk), len(todo), n)
    return summary_of("bronze", spec, files=len(files), new_files=len(todo),
                    **bronze_figures(ctx, engine, spec, sum(in_bronze.values()) + rows), rows_written=rows,
                    version=version, refused=refused, recovered_files=len(orphaned))


def files_in(engine: Engine, frame: nw.LazyFrame) -> dict[str, int]:
    """The ``_source_file`` values of a bronze frame with their row counts."""
    counts = engine.to_arrow(bronze.ingested_files(frame))
    return dict(zip(counts.column("_source_file").to_pylist(), counts.column("rows").to_pylist(), strict=True))


def _lines(path: Path) -> int:
    """The file's line count (a last line without its newline counts), read in blocks."""
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")

