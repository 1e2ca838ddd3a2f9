"""The Prefect tasks of the daily flow: one per table per stage. Each reads through the engine, calls the
backend-agnostic transforms in ``tasks/``, writes through the engine, and returns a small summary."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.exceptions import MissingContextError

from backends import Engine, landing
from backends.checkpoints import Checkpoints
from backends.releases import Releases
from contracts.catalog import Gate, TableSpec, bronze_for, quarantine_for, table, tables
from contracts.landing import LandingEntity, landing_entity
from flows import customer_grain
from flows.caching import conform_code_version
from flows.context import RunContext
from flows.retry_policy import LAKE_RETRIES, SOURCE_RETRIES
from flows.tracking import lake_task
from tasks import audit, bronze, gold, silver


class AccountingError(RuntimeError):
    """A stage lost or invented rows: input rows != accepted + quarantined."""


class GateFailedError(RuntimeError):
    """A table's batch broke its quality gate; the flow stops before the next layer."""


class AuditFailedError(RuntimeError):
    """Tables failed their audit, so they were not released; the previous release stays current."""


def _summary(stage: str, spec: TableSpec, **figures: Any) -> dict[str, Any]:
    return {"stage": stage, "table": spec.name, **figures}


def _quarantine(engine: Engine, spec: TableSpec, data: pa.Table, ctx: RunContext, *, replace: bool = False
                ) -> tuple[int, dict[str, int]]:
    """Write rejected rows (rule, reason, record, record_hash, source_file) to ``spec``'s quarantine table; with
    ``replace``, they replace the run date's partition (no rows: it is emptied)."""
    if data.num_rows == 0 and not (replace and engine.exists(quarantine_for(spec))):
        return 0, {}
    qspec = quarantine_for(spec)
    stamped = engine.from_arrow(data).with_columns(
        nw.col("record_hash").cum_count().over("record_hash", "rule", "source_file", order_by="record_hash"
                                               ).alias("occurrence"),
        nw.lit(ctx.run_id).alias("run_id"),
        nw.lit(ctx.run_date).cast(nw.Date()).alias("run_date"),
    )
    if replace:
        engine.overwrite_partitions(qspec, stamped, partitions={"run_date": [ctx.run_date]})
    else:
        engine.merge(qspec, stamped, insert_only=True)
    return data.num_rows, dict(Counter(data.column("rule").to_pylist()))


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
        _logger().info("%s: not deliveries (hidden or marker files), left alone: %s", entity.name,
                       ", ".join(listed.ignored))
    if not listed.files and not listed.refused:
        _logger().warning("no landing files for %s on %s under %s", entity.name, ctx.run_date, folder)
    _log_refused(ctx, entity, listed.refused)
    named_refused = [r["source_file"] for r in listed.refused]
    files = listed.files
    if entity.stream:
        summary = _ingest_stream(ctx, engine, entity, files)
        summary["refused"] = named_refused + summary["refused"]
        return summary
    # A file of the run date's folder can only have been ingested by a run of that date: look in its partition.
    done = _files_in(engine, bronze.batch_for(engine.scan(spec), ctx.run_date))
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
    return _summary("bronze", spec, files=len(files), new_files=len(new),
                    **bronze_figures(ctx, engine, spec, sum(done.values()) + rows), rows_written=rows,
                    version=version, refused=named_refused + refused)


def bronze_figures(ctx: RunContext, engine: Engine, spec: TableSpec, accepted: int) -> dict[str, Any]:
    """The run date's bronze batch of ``spec`` (every file ingested for the date, by this run or before):
    ``accepted`` rows in bronze, the records its quarantine holds for the date (by rule), so a gate judges the
    same batch on a rerun as on the first run."""
    rules = quarantined_on_run_date(ctx, engine, spec)
    quarantined = sum(rules.values())
    return {"rows_in": accepted + quarantined, "accepted": accepted, "quarantined": quarantined, "rules": rules}


def quarantined_on_run_date(ctx: RunContext, engine: Engine, spec: TableSpec, *,
                            replay_log_path: str | None = None) -> dict[str, int]:
    """How many rows the quarantine of ``spec`` holds for the run date, by rule; with ``replay_log_path``,
    without the rows a replay has accepted since. A row a replay sent back under another rule counts once,
    under its first rule."""
    qspec = quarantine_for(spec)
    if not engine.exists(qspec):
        return {}
    rows = engine.scan(qspec).filter(nw.col("run_date") == nw.lit(ctx.run_date).cast(nw.Date()))
    replayed = ctx.settings().lake().read_log(replay_log_path) if replay_log_path else None
    if replayed is not None and replayed.num_rows:
        hashes = pa.table({"record_hash": replayed.column("record_hash").cast(pa.string()).unique()})
        rows = rows.join(engine.from_arrow(hashes), on="record_hash", how="anti")
    firsts = rows.group_by("record_hash", "source_file", "occurrence").agg(nw.col("rule").min())
    counts = engine.to_arrow(firsts.group_by("rule").agg(nw.len().alias("n")))
    return dict(zip(counts.column("rule").to_pylist(), counts.column("n").to_pylist(), strict=True))


@lake_task(lambda p: [], name="extract", task_run_name="extract-{entity_name}", **SOURCE_RETRIES)
def extract_entity(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Pull the run date's new and changed records of one entity from its source system into landing files
    (backends/sources/extract.py: watermark window with lookback, resumable, each record version once)."""
    from backends.sources import connector_for
    from backends.sources.extract import run_extract

    entity = landing_entity(entity_name)
    settings = ctx.settings()
    engine = ctx.engine()
    spec = bronze_for(entity)

    def known_hashes(first: date) -> pa.ChunkedArray:
        if engine.version(spec) is None:
            return pa.chunked_array([], type=pa.string())
        batch = engine.scan(spec).filter(nw.col("_ingest_date") >= nw.lit(first).cast(nw.Date()))
        return engine.to_arrow(batch.select("_record_hash")).column("_record_hash")

    sources = settings.sources
    result = run_extract(
        connector_for(entity, settings), lake=settings.lake(), landing_root=ctx.landing_dir(),
        run_date=ctx.run_date, run_id=ctx.run_id, lookback_days=settings.lookback_days,
        first_from=date.fromisoformat(sources.first_from) if sources.first_from else None,
        chunk_rows=sources.file_rows, known_hashes=known_hashes, logger=_logger())
    for note in result.notes:
        _logger().warning("%s on %s: %s", entity.name, ctx.run_date, note)
    return result.summary()


@lake_task(lambda p: [], name="acknowledge", task_run_name="acknowledge-{entity_name}", **SOURCE_RETRIES)
def acknowledge_stream(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Commit to Kafka the offsets of the micro-batch files bronze has applied (after the bronze commit)."""
    from backends.sources import connector_for
    from backends.sources.extract import ExtractLog

    entity = landing_entity(entity_name)
    settings = ctx.settings()
    applied = Checkpoints(settings.lake(), entity).applied()
    landed = [r for r in ExtractLog(settings.lake(), entity).rows() if r["file"] and r["file"] in applied]
    if not landed:
        return {"stage": "acknowledge", "table": f"landing:{entity.name}", "offsets": {}}
    offsets = connector_for(entity, settings).commit(landed[-1]["cursor"])  # type: ignore[attr-defined]
    _logger().info("%s: committed offsets %s to the consumer group", entity.name, offsets)
    return {"stage": "acknowledge", "table": f"landing:{entity.name}", "offsets": {str(k): v for k, v in offsets.items()}}


def _append_files(ctx: RunContext, engine: Engine, entity: LandingEntity, files: list[tuple[Path, str]]
                  ) -> tuple[int, int, int | None, list[str]]:
    """Read ``files`` and append their rows to bronze in one commit (unparseable records to quarantine first,
    refused files logged): rows, quarantined, bronze version, refused files."""
    spec = bronze_for(entity)
    read = engine.read_landing(entity, files) if files else None
    quarantined = 0
    if read is not None and read.rejects.num_rows:
        quarantined, _ = _quarantine(engine, spec, read.rejects, ctx)
    rows, version = 0, engine.version(spec)
    if read is not None:
        stamped = engine.materialize(
            bronze.with_lineage(read.rows, run_id=ctx.run_id, ingested_at=ctx.started_at, ingest_date=ctx.run_date)
        )
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
        ctx.settings().lake().append_log(delivery_log(entity), pa.Table.from_pylist(
            [{"source_file": label, "records": n, "run_id": ctx.run_id, "run_date": ctx.run_date, "ingested_at": now}
             for label, n in sorted(read_whole.items())], schema=DELIVERY_LOG_SCHEMA))
    return rows, quarantined, version, [r["source_file"] for r in refused]


DELIVERY_LOG_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("records", pa.int64()), ("run_id", pa.string()), ("run_date", pa.date32()),
    ("ingested_at", pa.timestamp("us", tz="UTC")),
])


def delivery_log(entity: LandingEntity) -> str:
    """Every landing file of ``entity`` read into bronze, with its records (0: an empty "no changes" delivery,
    which adds no bronze row but counts for freshness)."""
    return f"_deliveries/{entity.source}/{entity.entity}"


def delivered(ctx: RunContext, entity: LandingEntity) -> set[str]:
    """The landing files of ``entity`` for the run date recorded as read."""
    log = ctx.settings().lake().read_log(delivery_log(entity))
    if log is None:
        return set()
    return {r["source_file"] for r in log.select(["source_file", "run_date"]).to_pylist()
            if r["run_date"] == ctx.run_date}


def newest_delivery(lake: Any, source: TableSpec) -> date | None:
    """The newest run date with a delivery to bronze table ``source``: its newest ingest partition, or a newer
    empty delivery from the delivery log."""
    newest = lake.newest_partition(source, "_ingest_date")  # from the Delta log: no data read
    dates = [date.fromisoformat(newest)] if newest else []
    log = lake.read_log(delivery_log(landing_entity(source.name.removeprefix("bronze."))))
    if log is not None and log.num_rows:
        dates.append(max(log.column("run_date").to_pylist()))
    return max(dates) if dates else None


def _log_refused(ctx: RunContext, entity: LandingEntity, refused: list[dict[str, str]]) -> None:
    """Name each refused file in the run's log and append it to the entity's refused log."""
    for r in refused:
        _logger().error("refused %s (%s): %s", r["source_file"], r["problem"], r["reason"])
    if refused:
        now = datetime.now(UTC)
        ctx.settings().lake().append_log(refused_log(entity.source, entity.entity), pa.Table.from_pylist(
            [{**r, "run_id": ctx.run_id, "run_date": ctx.run_date, "refused_at": now} for r in refused],
            schema=REFUSED_LOG_SCHEMA))


def _ingest_stream(ctx: RunContext, engine: Engine, entity: LandingEntity,
                   files: list[tuple[Path, str]]) -> dict[str, Any]:
    """Apply a stream's micro-batch files not yet in its checkpoint, in order, ``stream_commit_max_files`` per
    bronze commit, each commit followed by its checkpoint row (backends/checkpoints.py: exactly once)."""
    spec = bronze_for(entity)
    settings = ctx.settings()
    checkpoints = Checkpoints(settings.lake(), entity)
    applied = checkpoints.applied()
    pending = [(f, label) for f, label in files if label not in applied]
    # Written by a run that died before its checkpoint row: in bronze already, so record them, never rewrite.
    in_bronze = _files_in(engine, bronze.batch_for(engine.scan(spec), ctx.run_date))
    orphaned = [(f, label) for f, label in pending if label in in_bronze]
    if orphaned:
        labels = [label for _, label in orphaned]
        checkpoints.record(labels, [_lines(f) for f, _ in orphaned], rows=sum(in_bronze[x] for x in labels),
                           quarantined=0,
                           bronze_version=engine.version(spec) or 0, recovered=True, run_id=ctx.run_id,
                           run_date=ctx.run_date)
        _logger().warning("%s: %d micro-batch file(s) were in bronze but not checkpointed (a run died between the "
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
        _logger().info("%s: applied micro-batch files %d-%d of %d (%d rows)", entity.name, i + 1,
                       i + len(chunk), len(todo), n)
    return _summary("bronze", spec, files=len(files), new_files=len(todo),
                    **bronze_figures(ctx, engine, spec, sum(in_bronze.values()) + rows), rows_written=rows,
                    version=version, refused=refused, recovered_files=len(orphaned))


def _files_in(engine: Engine, frame: nw.LazyFrame) -> dict[str, int]:
    """The ``_source_file`` values of a bronze frame with their row counts."""
    counts = engine.to_arrow(bronze.ingested_files(frame))
    return dict(zip(counts.column("_source_file").to_pylist(), counts.column("rows").to_pylist(), strict=True))


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


REFUSED_LOG_SCHEMA = pa.schema([
    *((c, pa.string()) for c in ("source_file", "problem", "reason", "run_id")),
    ("run_date", pa.date32()), ("refused_at", pa.timestamp("us", tz="UTC")),
])


def refused_log(source: str, entity: str) -> str:
    """Where refused landing files are recorded (each run that refuses one appends a row)."""
    return f"_refused/{source}/{entity}"


def _logger() -> Any:
    """The Prefect run logger inside a run; this module's logger when a task body runs bare (benchmarks)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@lake_task(lambda p: [table(p["table_name"]).source or "", *silver.REFS_NEEDED.get(p["table_name"], ())], rules=True,
           name="silver", task_run_name="silver-{table_name}", **LAKE_RETRIES)
def refine_table(ctx: RunContext, table_name: str) -> dict[str, Any]:
    """Conform the run date's bronze batch into a silver table: quarantine, dedupe latest, merge by key.

    A date's batch is conformed whole, and again whenever what it was conformed with changed (``conform_inputs``:
    its bronze files, the bronze files up to the date its reference tables are built from, the rules' code and
    settings): a retry or rerun after a fix (missing customers delivered, a rule corrected, a refused file
    fixed) gives the tables one clean run with the fixed inputs gives, and the date's quarantine holds only
    what that run quarantines. Unchanged inputs change nothing; the summary then gives the date's figures as
    the lake holds them, so a gate judges the same batch on a rerun. ``_conformed/<entity>`` records each
    conform of a date."""
    spec = table(table_name)
    engine = ctx.engine()
    lake = ctx.settings().lake()
    source = table(spec.source or "")
    batch = bronze.batch_for(engine.scan(source), ctx.run_date)
    files = _files_in(engine, batch)
    inputs = conform_inputs(ctx, spec, files)
    if files and last_conform(ctx, spec) == inputs:
        _logger().info("%s: the %d bronze file(s) of %s were conformed with the same inputs before; nothing to do",
                       spec.name, len(files), ctx.run_date)
        return _summary("silver", spec, files=0, **silver_figures(ctx, engine, spec, sum(files.values())),
                        rows_written=0, version=engine.version(spec))
    before = engine.version(spec)
    done = conform_into_silver(ctx, engine, spec, engine.materialize(batch), replace_quarantine=bool(files),
                               withdraw_before=first_conform_version(ctx, spec) if files else None)
    if files:
        now = datetime.now(UTC)
        lake.append_log(conformed_log(spec), pa.Table.from_pylist(
            [{"source_file": f, "run_id": ctx.run_id, "run_date": ctx.run_date, "conformed_at": now, "inputs": inputs,
              "version_before": -1 if before is None else before} for f in sorted(files)],
            schema=CONFORMED_LOG_SCHEMA))
    return _summary("silver", spec, files=len(files), **{k: v for k, v in done.items() if k != "accepted_hashes"})


CONFORMED_LOG_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("run_id", pa.string()), ("run_date", pa.date32()),
    ("conformed_at", pa.timestamp("us", tz="UTC")), ("inputs", pa.string()),
    ("version_before", pa.int64()),  # the silver table's version before the conform (-1: it did not exist)
])


def conformed_log(spec: TableSpec) -> str:
    """Each conform of a date's bronze files into silver table ``spec`` (one row per file, with the digest of
    the inputs it was conformed with)."""
    return f"_conformed/{spec.entity}"


def conform_inputs(ctx: RunContext, spec: TableSpec, files: Mapping[str, int]) -> str:
    """A digest of what conforming the run date's batch of ``spec`` depends on: the batch's bronze files (with
    their rows), the bronze files up to the run date of the tables its references are built from, the rules'
    code version and the settings the rules read."""
    settings = ctx.settings()
    lake = settings.lake()
    refs = {name: lake.files_through(table(table(name).source or name), "_ingest_date", ctx.run_date.isoformat())
            for name in silver.REFS_NEEDED.get(spec.name, ())}
    key = hashlib.sha256(settings.require_hmac_key() + b"conform-inputs").hexdigest()
    material = {"files": sorted(files.items()), "refs": refs, "rules": conform_code_version(),
                "settings": [settings.fx_window_days, settings.lookback_days, key]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def last_conform(ctx: RunContext, spec: TableSpec) -> str | None:
    """The inputs digest of the latest conform of the run date into ``spec`` (None: never, or by a release
    that did not record it)."""
    log = ctx.settings().lake().read_log(conformed_log(spec))
    if log is None or "inputs" not in log.column_names:
        return None
    mine = [r for r in log.select(["run_date", "conformed_at", "inputs"]).to_pylist() if r["run_date"] == ctx.run_date]
    return max(mine, key=lambda r: r["conformed_at"])["inputs"] if mine else None


def first_conform_version(ctx: RunContext, spec: TableSpec) -> int | None:
    """The version ``spec`` had before the run date's batch was first conformed into it (-1: the table did not
    exist); None when the date was never conformed, or by a release that did not record it."""
    log = ctx.settings().lake().read_log(conformed_log(spec))
    if log is None or "version_before" not in log.column_names:
        return None
    mine = [r for r in log.select(["run_date", "conformed_at", "version_before"]).to_pylist()
            if r["run_date"] == ctx.run_date and r["version_before"] is not None]
    return min(mine, key=lambda r: r["conformed_at"])["version_before"] if mine else None


def silver_figures(ctx: RunContext, engine: Engine, spec: TableSpec, rows_in: int) -> dict[str, Any]:
    """The run date's batch of ``spec`` as the lake holds it: ``rows_in`` bronze rows, the date's quarantined
    rows not accepted since by a replay (by rule), the rest accepted."""
    from flows.quarantine import replay_log

    rules = quarantined_on_run_date(ctx, engine, spec, replay_log_path=replay_log(spec.name))
    quarantined = sum(rules.values())
    return {"rows_in": rows_in, "accepted": rows_in - quarantined, "quarantined": quarantined, "rules": rules}


def conform_into_silver(ctx: RunContext, engine: Engine, spec: TableSpec, batch: nw.LazyFrame, *,
                        accepted_hashes: bool = False, late_ok: bool = False,
                        replace_quarantine: bool = False, withdraw_before: int | None = None) -> dict[str, Any]:
    """Conform a bronze ``batch`` of ``spec``'s entity: quarantine what fails a rule, merge the rest by key.
    Every row is accounted for (rows in = accepted + quarantined) or nothing is merged. With
    ``accepted_hashes``, also the ``_record_hash`` of every accepted row (for the replay log). ``late_ok``
    (a replay) accepts changes older than the lookback. With ``replace_quarantine`` (``batch`` is the run
    date's whole batch) the run date's quarantine partition is replaced by this batch's rejects. ``withdraw_before`` (the batch
    was conformed before, into the table's version after this one; -1: into no table) takes out what the batch
    brought in then and a rule now rejects (``withdraw``)."""
    settings = ctx.settings()
    refs = {name: engine.scan(table(name)) for name in silver.REFS_NEEDED.get(spec.name, ())}
    result = silver.conform(spec.name, batch, refs=refs, hmac_key=settings.require_hmac_key(),
                            fx_window_days=settings.fx_window_days, run_date=ctx.run_date,
                            lookback_days=None if late_ok else settings.lookback_days,
                            checkpoint=engine.materialize)
    valid = engine.materialize(result.valid)
    rows_in, accepted = engine.count(batch), engine.count(valid)
    rejected = result.quarantine_records(engine.to_arrow(result.quarantined))
    quarantined, rules = _quarantine(engine, spec, rejected, ctx, replace=replace_quarantine)
    if rows_in != accepted + quarantined:
        msg = f"{spec.name} on {ctx.run_date}: {rows_in} bronze rows in, {accepted} accepted + {quarantined} quarantined"
        raise AccountingError(msg)
    hashes = engine.to_arrow(valid.select("_record_hash")).column(0).to_pylist() if accepted_hashes else []
    if withdraw_before is not None and quarantined:
        withdraw(engine, spec, valid, rejected.column("record_hash"), withdraw_before)
    versions: dict[str, Any] = {}
    if spec.history:  # every version first (merged by version key), then the latest per key
        history = table(spec.history)
        kept = engine.merge(history, silver.latest_per_key(valid.select(history.columns), history))
        versions = {"history_files_scanned": kept.files_scanned, "history_files_skipped": kept.files_skipped}
    written = engine.merge(spec, silver.latest_per_key(valid, spec))
    return {"rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rules": rules,
            "rows_written": written.rows, "version": written.version, "accepted_hashes": hashes,
            "files_scanned": written.files_scanned, "files_skipped": written.files_skipped, **versions}


def withdraw(engine: Engine, spec: TableSpec, valid: nw.LazyFrame, rejected: pa.ChunkedArray, before: int) -> None:
    """A batch conformed again rejects rows it accepted before (a stricter rule): take them out of silver as
    one clean run would never have put them in. A key whose row came from those records gets the version it had
    before the batch was first conformed (table version ``before``; -1: none) or the batch's own accepted one,
    whichever is later, and none when neither exists; the history table (``spec.history``) drops those
    versions. Records the batch also accepts (a copy quarantined as a duplicate) are not withdrawn."""
    gone = pa.table({"_record_hash": pa.array(rejected.to_pylist(), pa.string()).unique()})
    gone_rows = engine.from_arrow(gone).join(valid.select("_record_hash"), on="_record_hash", how="anti")
    targets = [(spec, before)] + ([(table(spec.history), -1)] if spec.history else [])
    for target, earlier_version in targets:
        withdrawn = engine.materialize(engine.scan(target).join(gone_rows, on="_record_hash", how="semi"))
        count = engine.count(withdrawn)
        if count == 0:
            continue
        keys = withdrawn.select(*target.keys)
        candidates = [valid.select(target.columns).join(keys, on=list(target.keys), how="semi")]
        if earlier_version >= 0:
            candidates.append(engine.scan(target, version=earlier_version).select(target.columns)
                              .join(keys, on=list(target.keys), how="semi"))
        engine.replace_rows(target, withdrawn, silver.latest_per_key(nw.concat(candidates), target))
        _logger().info("%s: %d row(s) that a rule now rejects withdrawn", target.name, count)


@lake_task(lambda p: ["silver.customers", "silver.contacts"], name="silver-links", **LAKE_RETRIES)
def link_crm(ctx: RunContext) -> dict[str, Any]:
    """Match customers to CRM contacts (and their accounts)."""
    spec = table("silver.customer_crm_links")
    engine = ctx.engine()
    links = silver.link_customers_to_crm(engine.scan(table("silver.customers")), engine.scan(table("silver.contacts")))
    written = engine.overwrite(spec, links)
    return _summary("silver", spec, rows_written=written.rows, version=written.version)


# What each gold table is built from (also what its task's cache key is made of).
GOLD_INPUTS: dict[str, tuple[str, ...]] = {
    "gold.dim_customer": ("silver.customer_versions", "silver.customer_crm_links"),
    "gold.dim_product": ("silver.products",),
    "gold.fact_orders": ("silver.orders", "silver.order_events", "gold.dim_customer"),
    "gold.dim_date": ("gold.fact_orders",),
    "gold.customer_360": ("gold.fact_orders", "silver.customers", "silver.customer_crm_links", "silver.accounts",
                          "silver.opportunities", "silver.customer_behaviour"),
    "gold.product_performance": ("gold.fact_orders",),
    "gold.customer_segments": ("gold.customer_360", "gold.fact_orders"),
}


# Not gold.fact_orders: the plan's own stage rewrites it, and a retry must find the plan it made.
PLAN_INPUTS = ("silver.orders", "silver.order_events", "silver.customer_versions", "bronze.snowflake.orders",
               "bronze.kafka.order_events", "bronze.snowflake.customers")


def affected_order_dates(engine: Engine, *, orders_batch: nw.LazyFrame, events_batch: nw.LazyFrame,
                         customers_batch: nw.LazyFrame, events_since: date | None = None) -> list[date]:
    """The order dates whose gold partitions the batches' rows of silver orders, order events and customer
    versions change (tasks/gold.py ``changed_order_dates``: batches of ``_source_file`` or of
    ``_record_hash``), sorted. ``events_since``: no event of the batch is older (event partitions before it
    are not read)."""
    def s(name: str) -> nw.LazyFrame:
        return engine.scan(table(name))

    # The orders' few columns the plan joins on, read once (three joins use them).
    orders = engine.materialize(s("silver.orders").select("order_id", "customer_id", "order_ts", "order_date",
                                                         *orders_batch.columns))
    events = s("silver.order_events")
    if events_since is not None:
        events = events.filter(nw.col("event_date") >= nw.lit(events_since).cast(nw.Date()))
    changed = gold.changed_order_dates(orders, events, s("silver.customer_versions"), orders_batch=orders_batch,
                                       events_batch=events_batch, customers_batch=customers_batch)
    return sorted(d for d in engine.to_arrow(changed).column("order_date").to_pylist() if d is not None)


@lake_task(lambda p: PLAN_INPUTS, name="gold-plan")
def plan_gold(ctx: RunContext) -> list[date] | None:
    """The order dates whose gold partitions the run date's batches changed; None when gold must be built
    whole (no fact table yet)."""
    engine = ctx.engine()
    if not engine.exists(table("gold.fact_orders")):
        return None

    # The run date's bronze files: the silver rows that came from them are the ones the batches wrote (a file
    # column reads far less than the rows' hashes).
    def batch(name: str) -> nw.LazyFrame:
        return bronze.batch_for(engine.scan(table(name)), ctx.run_date).select("_source_file")

    # Events the batch accepted lie within the lookback (late.beyond_lookback), so older event partitions are
    # not read.
    dates = affected_order_dates(
        engine, orders_batch=batch("bronze.snowflake.orders"), events_batch=batch("bronze.kafka.order_events"),
        customers_batch=batch("bronze.snowflake.customers"),
        events_since=ctx.run_date - timedelta(days=ctx.settings().lookback_days))
    _logger().info("gold for %s: %d order date(s) changed%s", ctx.run_date, len(dates),
                   f" ({dates[0]} .. {dates[-1]})" if dates else "")
    return dates


@lake_task(lambda p: GOLD_INPUTS[p["table_name"]], name="gold", task_run_name="gold-{table_name}", **LAKE_RETRIES)
def build_gold(ctx: RunContext, table_name: str, order_dates: list[date] | None = None) -> dict[str, Any]:
    """Build one gold table from silver (marts also from gold.fact_orders). Tables partitioned by order date
    are rebuilt only for ``order_dates`` (None: whole); the others are small and rebuilt whole."""
    spec = table(table_name)
    engine = ctx.engine()
    partial = order_dates is not None and spec.partition_by == ("order_date",) and engine.exists(spec)

    def s(name: str) -> nw.LazyFrame:
        frame = engine.scan(table(name))
        if partial and name in ("silver.orders", "gold.fact_orders"):
            frame = frame.filter(nw.col("order_date").is_in(order_dates))
        return frame

    if partial and not order_dates:
        return _summary("gold", spec, rows_written=0, version=engine.version(spec), order_dates=0)
    if spec.name in customer_grain.TABLES:
        return _build_dim_customer(ctx, engine, spec, s, whole=order_dates is None)
    orders = s("silver.orders")
    builders: dict[str, Callable[[], nw.LazyFrame]] = {
        "gold.fact_orders": lambda: gold.build_fact_orders(
            orders, gold.events_that_can_count(s("silver.order_events"), orders, engine.to_arrow(
                gold.oldest_change_day(orders)).column("day")[0].as_py()),
            s("gold.dim_customer").join(orders.select("customer_id").unique(), on="customer_id", how="semi")),
        "gold.dim_product": lambda: gold.build_dim_product(s("silver.products")),
        "gold.dim_date": lambda: gold.build_dim_date(_calendar(engine, s("gold.fact_orders"))),
        "gold.customer_360": lambda: gold.build_customer_360(
            s("gold.fact_orders"), s("silver.customers"), s("silver.customer_crm_links"), s("silver.accounts"),
            s("silver.opportunities"), s("silver.customer_behaviour")),
        "gold.product_performance": lambda: gold.build_product_performance(s("gold.fact_orders")),
        "gold.customer_segments": lambda: gold.build_customer_segments(s("gold.customer_360"), s("gold.fact_orders")),
    }
    frame = builders[spec.name]()
    written = engine.overwrite_partitions(spec, frame) if partial else engine.overwrite(spec, frame)
    return _summary("gold", spec, rows_written=written.rows, version=written.version,
                    order_dates=len(order_dates) if partial and order_dates else None)


def dim_customer_of(scan: Callable[[str], nw.LazyFrame]) -> nw.LazyFrame:
    """``gold.dim_customer`` built from the inputs ``scan`` gives (all customers, or some)."""
    return gold.build_dim_customer(scan("silver.customer_versions"), scan("silver.customer_crm_links"))


def _build_dim_customer(ctx: RunContext, engine: Engine, spec: TableSpec, scan: Callable[[str], nw.LazyFrame], *,
                        whole: bool) -> dict[str, Any]:
    """Build ``gold.dim_customer`` (flows/customer_grain.py): again only for the customers whose inputs changed
    since its recorded build, else (``whole``, or no build to continue) whole. Records the build."""
    lake = ctx.settings().lake()
    inputs_now = {name: engine.version(table(name)) for name in GOLD_INPUTS[spec.name]}
    current = engine.version(spec)
    since, why = (None, "a whole build was asked for") if whole else customer_grain.recorded_inputs(
        lake, spec, current, inputs_now)
    if since is None:
        if not whole:
            _logger().info("%s: built whole, because %s", spec.name, why)
        written = engine.overwrite(spec, dim_customer_of(scan))
        version, rows, customers = written.version, written.rows, None
    else:
        changed = engine.materialize(customer_grain.affected_customers(engine, spec, since))
        customers = engine.count(changed)
        if customers:
            fresh = dim_customer_of(customer_grain.for_customers(scan, changed))
            written = engine.overwrite(spec, customer_grain.rebuilt(engine.scan(spec), changed, fresh))
            version, rows = written.version, written.rows
        else:  # nothing it is built from changed: the table stays as it is
            version, rows = current, 0
        _logger().info("%s: %d customer(s) built again, the others kept", spec.name, customers)
    # A missing input is left out of the record, so the next build is whole (recorded_inputs).
    customer_grain.record(lake, spec, version, {k: v for k, v in inputs_now.items() if v is not None}, ctx.run_id)
    return _summary("gold", spec, rows_written=rows, version=version, order_dates=None, customers_rebuilt=customers)


def gate_failures(summaries: list[dict[str, Any]], gates: Mapping[str, Gate]) -> list[dict[str, Any]]:
    """The summaries whose quarantined share breaks their table's gate: ``max_quarantine_rate`` for batches of at
    least ``min_rows``, ``small_batch_max_share`` for smaller ones."""
    failures = []
    for s in summaries:
        gate, rows = gates.get(s["table"]), s.get("rows_in") or 0
        if gate is None or rows == 0:
            continue
        limit = gate.max_quarantine_rate if rows >= gate.min_rows else gate.small_batch_max_share
        quarantined = s.get("quarantined", 0)
        if quarantined > limit * rows:
            failures.append({"table": s["table"], "rows_in": rows, "quarantined": quarantined,
                             "limit": limit, "rules": dict(s.get("rules", {}))})
    return failures


@lake_task(lambda p: [t.name for t in tables(p["layer"])], name="gate", task_run_name="gate-{layer}")
def check_gate(ctx: RunContext, layer: str, summaries: list[dict[str, Any]]) -> None:
    """Stop the flow when a table of ``layer`` quarantined more than its gate allows in this run, breaks a
    declared reference, or is stale; the failing rules with sample records go to the table artifact
    ``<layer>-gate``."""
    failures = gate_failures(summaries, {t.name: t.gate for t in tables(layer)})  # type: ignore[arg-type]
    engine = ctx.engine()
    lake = ctx.settings().lake()
    broken = [f for spec in tables(layer) if spec.references and engine.exists(spec)  # type: ignore[arg-type]
              for f in audit.check_references(spec, lambda name: engine.scan(table(name)),
                                              lambda frame: engine.to_arrow(frame).to_pylist())]
    for spec in tables(layer):  # type: ignore[arg-type]
        source = table(spec.source) if spec.source else None
        if source is not None and spec.gate.max_age_days is not None and engine.exists(source):
            stale = audit.check_freshness(spec, newest_delivery(lake, source), ctx.run_date)
            broken += [stale] if stale else []
    if not failures and not broken:
        return
    rows = [{"table": b.table, "rule": b.rule, "rows": b.failing_rows, "share": "",
             "sample": " | ".join(str({k: str(v) for k, v in r.items()}) for r in b.sample)} for b in broken]
    for f in failures:
        quarantine = engine.scan(quarantine_for(table(f["table"])))
        for rule, n in sorted(f["rules"].items(), key=lambda kv: (-kv[1], kv[0])):
            mine = quarantine.filter((nw.col("run_id") == ctx.run_id) & (nw.col("rule") == rule))
            sample = engine.to_arrow(mine.select("record").sort("record").head(3)).column("record").to_pylist()
            rows.append({"table": f["table"], "rule": rule, "rows": n, "share": f"{n / f['rows_in']:.1%}",
                         "sample": " | ".join(sample)})
    create_table_artifact(key=f"{layer}-gate", table=rows,
                          description=f"{layer} gate failures of run {ctx.run_id} for {ctx.run_date}")
    problems = [f"{b.table} {b.rule}: {b.reason}" if b.rule == "freshness.stale" else
                f"{b.table} {b.rule}: {b.failing_rows} row(s) break referential integrity" for b in broken] + [
        f"{f['table']} quarantined {f['quarantined'] / f['rows_in']:.1%} of {f['rows_in']:,} rows "
        f"(limit {f['limit']:.0%}), most by " + ", ".join(
            f"{r} ({n})" for r, n in sorted(f["rules"].items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        for f in failures]
    msg = (f"{layer} gate failed for {ctx.run_date}: " + "; ".join(problems)
           + f"; the next layer was not built (artifact: {layer}-gate)")
    raise GateFailedError(msg)


@lake_task(lambda p: list(p["versions"]), name="release-gold")
def release_gold(ctx: RunContext, versions: dict[str, int], order_dates: list[date] | None = None) -> dict[str, Any]:
    """Audit the gold tables at the versions this run wrote; release them all at once only if every audit
    passes. On failure: a table artifact of the failing rules with sample rows, and an error naming them.

    With ``order_dates`` (an incremental run), the references of tables partitioned by order date are checked
    in those partitions only, unless a key they point at was lost since the current release: the other
    partitions passed the last audit and still point at keys that exist, so the check is as strict as a whole
    one. A lost key (a dimension row gone) sends the whole table through the check."""
    engine = ctx.engine()
    releases = Releases(ctx.settings().lake())
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
    _logger().info("released %s: %s", release.release_id, release.versions)
    return {"stage": "release", "table": release.release_id, "rows_written": len(release.versions),
            "version": release.seq}


# Dimensions before the fact (it looks up the customer version), the fact before the marts.
GOLD_ORDER = ("gold.dim_customer", "gold.dim_product", "gold.fact_orders", "gold.dim_date", "gold.customer_360",
              "gold.product_performance", "gold.customer_segments")
# Silver tables whose conform step reads other silver tables come after them.
SILVER_ORDER = ("silver.fx_rates", "silver.customers", "silver.products", "silver.accounts", "silver.contacts",
                "silver.customer_behaviour", "silver.order_events", "silver.orders", "silver.opportunities")


def _calendar(engine: Engine, fact: nw.LazyFrame) -> nw.LazyFrame:
    """Every day from the first to the last order date (empty when there are no orders)."""
    bounds = engine.to_arrow(fact.select(nw.col("order_date").min().alias("lo"), nw.col("order_date").max().alias("hi")))
    lo, hi = bounds.column("lo")[0].as_py(), bounds.column("hi")[0].as_py()
    days = [] if lo is None else [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]
    return engine.from_arrow(pa.table({"date": pa.array(days, pa.date32())}))

