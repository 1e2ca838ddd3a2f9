"""Silver tasks: a run date's bronze batch conformed into its silver table (rules, quarantine, latest per key,
merge), reconformed when what it was conformed with changed, and the customer-to-CRM links."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import narwhals as nw

from lakehouse.backends import Engine
from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog, lake_log, replay_log
from lakehouse.contracts.catalog import TableSpec, table
from lakehouse.tasks.bronze import files_in
from lakehouse.tasks.caching import conform_code_version
from lakehouse.tasks.context import RunContext, logger, summary_of
from lakehouse.tasks.quarantine import AccountingError, quarantined_on_run_date, write_quarantine
from lakehouse.tasks.retry_policy import LAKE_RETRIES
from lakehouse.tasks.tracking import lake_task
from lakehouse.tasks.transforms import bronze, silver


@lake_task(lambda p: table(p["table_name"]).inputs, rules=True,
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
    lake = ctx.lake()
    source = table(spec.source or "")
    batch = bronze.batch_for(engine.scan(source), ctx.run_date)
    files = files_in(engine, batch)
    inputs = conform_inputs(ctx, spec, files)
    earlier = conforms_of_run_date(ctx, spec)  # the log is read once
    if files and earlier and earlier[-1]["inputs"] == inputs:
        logger().info("%s: the %d bronze file(s) of %s were conformed with the same inputs before; nothing to do",
                       spec.name, len(files), ctx.run_date)
        return summary_of("silver", spec, files=0, **silver_figures(ctx, engine, spec, sum(files.values())),
                        rows_written=0, version=engine.version(spec))
    before = engine.version(spec)
    # The batch is not materialised: conform computes its parsed, rule-tagged rows once (its checkpoint), and its
    # rows were counted by file above. Holding it too would double the memory of a big day.
    done = conform_into_silver(ctx, engine, spec, batch, replace_quarantine=bool(files),
                               withdraw_before=first_version_before(earlier) if files else None,
                               rows_in=sum(files.values()))
    if files:
        now = datetime.now(UTC)
        conformed_log(lake, spec).append(
            [{"source_file": f, "run_id": ctx.run_id, "run_date": ctx.run_date, "conformed_at": now, "inputs": inputs,
              "version_before": -1 if before is None else before} for f in sorted(files)])
    return summary_of("silver", spec, files=len(files), **{k: v for k, v in done.items() if k != "accepted_rows"})


def conformed_log(lake: Lake, spec: TableSpec) -> LakeLog:
    """Each conform of a date's bronze files into silver table ``spec`` (one row per file, with the digest of
    the inputs it was conformed with)."""
    return lake_log(lake, "conformed", entity=spec.entity)


def conform_inputs(ctx: RunContext, spec: TableSpec, files: Mapping[str, int]) -> str:
    """A digest of what conforming the run date's batch of ``spec`` depends on: the batch's bronze files (with
    their rows), the bronze files up to the run date of the tables its references are built from, the rules'
    code version and the settings the rules read."""
    settings = ctx.settings()
    lake = ctx.lake()
    refs = {name: lake.files_through(table(table(name).source or name), "_ingest_date", ctx.run_date.isoformat())
            for name in spec.lookups}
    key = hashlib.sha256(settings.require_hmac_key() + b"conform-inputs").hexdigest()
    material = {"files": sorted(files.items()), "refs": refs, "rules": conform_code_version(),
                "settings": [settings.fx_window_days, settings.lookback_days, key]}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def conforms_of_run_date(ctx: RunContext, spec: TableSpec) -> list[dict[str, Any]]:
    """The conform log's rows of the run date for ``spec``, oldest first: the last one's ``inputs`` is the
    digest the batch was last conformed with (None: by a release that did not record it)."""
    rows = conformed_log(ctx.lake(), spec).rows()
    return [{"inputs": r.get("inputs"), "version_before": r.get("version_before")} for r in rows
            if r["run_date"] == ctx.run_date]


def first_version_before(conforms: list[dict[str, Any]]) -> int | None:
    """The version the table had before the run date's batch was first conformed into it (-1: the table did
    not exist); None when the date was never conformed, or by a release that did not record it."""
    return next((r["version_before"] for r in conforms if r["version_before"] is not None), None)


def silver_figures(ctx: RunContext, engine: Engine, spec: TableSpec, rows_in: int) -> dict[str, Any]:
    """The run date's batch of ``spec`` as the lake holds it: ``rows_in`` bronze rows, the date's quarantined
    rows not accepted since by a replay (by rule), the rest accepted."""
    rules = quarantined_on_run_date(ctx, engine, spec, replayed=replay_log(ctx.lake(), spec.name))
    quarantined = sum(rules.values())
    return {"rows_in": rows_in, "accepted": rows_in - quarantined, "quarantined": quarantined, "rules": rules}


def conform_into_silver(ctx: RunContext, engine: Engine, spec: TableSpec, batch: nw.LazyFrame, *,
                        late_ok: bool = False,
                        replace_quarantine: bool = False, withdraw_before: int | None = None,
                        rows_in: int | None = None) -> dict[str, Any]:
    """Conform a bronze ``batch`` of ``spec``'s entity: quarantine what fails a rule, merge the rest by key.
    Every row is accounted for (rows in = accepted + quarantined) or nothing is merged. The result's
    ``accepted_rows`` is a frame of the engine (computed once; the replay logs their hashes from it). ``late_ok``
    (a replay) accepts changes older than the lookback. With ``replace_quarantine`` (``batch`` is the run date's
    whole batch) the run date's quarantine partition is replaced by this batch's rejects. ``withdraw_before`` (the batch
    was conformed before, into the table's version after this one; -1: into no table) takes out what the batch
    brought in then and a rule now rejects (``withdraw``). ``rows_in``: the batch's rows where the caller counted
    them already (the run date's bronze files with their rows), so they are not counted again."""
    settings = ctx.settings()
    refs = {name: engine.scan(table(name)) for name in table(spec.name).lookups}
    result = silver.conform(spec.name, batch, refs=refs, hmac_key=settings.require_hmac_key(),
                            fx_window_days=settings.fx_window_days, run_date=ctx.run_date,
                            lookback_days=None if late_ok else settings.lookback_days,
                            checkpoint=engine.materialize)
    valid = engine.materialize_subset(result.valid)  # rows of the rule-tagged ones, which are materialised
    rows_in, accepted = engine.count(batch) if rows_in is None else rows_in, engine.count(valid)
    # The rejected rows are a filter of the tagged ones too (built and written by the engine, never collected): on
    # Spark computed from the staged rows at each use (their count per rule reads one column; the quarantine write
    # stages them), not staged once more (silver.orders on Sail: 0.4 s).
    rejected = engine.materialize_subset(result.quarantine_records())
    del result  # the rule-tagged rows (the widest frame of the conform) are no longer needed: freed here (on Spark
    # they stay staged, as the accepted rows are computed from them, until the engine is released)
    quarantined, rules = write_quarantine(engine, spec, rejected, ctx, replace=replace_quarantine)
    if rows_in != accepted + quarantined:
        msg = f"{spec.name} on {ctx.run_date}: {rows_in} bronze rows in, {accepted} accepted + {quarantined} quarantined"
        raise AccountingError(msg)
    if withdraw_before is not None and quarantined:
        withdraw(engine, spec, valid, rejected.select("record_hash"), withdraw_before)
    versions: dict[str, Any] = {}
    if spec.history:  # every version first (merged by version key), then the latest per key
        history = table(spec.history)
        kept = engine.merge(history, silver.latest_per_key(valid.select(history.columns), history))
        versions = {"history_files_scanned": kept.files_scanned, "history_files_skipped": kept.files_skipped}
    written = engine.merge(spec, silver.latest_per_key(valid, spec))
    return {"rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rules": rules,
            "rows_written": written.rows, "version": written.version, "accepted_rows": valid,
            "files_scanned": written.files_scanned, "files_skipped": written.files_skipped, **versions}


def withdraw(engine: Engine, spec: TableSpec, valid: nw.LazyFrame, rejected: nw.LazyFrame, before: int) -> None:
    """A batch conformed again rejects rows it accepted before (a stricter rule): take them out of silver as
    one clean run would never have put them in. A key whose row came from those records gets the version it had
    before the batch was first conformed (table version ``before``; -1: none) or the batch's own accepted one,
    whichever is later, and none when neither exists; the history table (``spec.history``) drops those
    versions. Records the batch also accepts (a copy quarantined as a duplicate) are not withdrawn."""
    gone = rejected.select(nw.col("record_hash").alias("_record_hash")).unique()
    gone_rows = gone.join(valid.select("_record_hash"), on="_record_hash", how="anti")
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
        logger().info("%s: %d row(s) that a rule now rejects withdrawn", target.name, count)


@lake_task(lambda p: table("silver.customer_crm_links").inputs, name="silver-links", **LAKE_RETRIES)
def link_crm(ctx: RunContext) -> dict[str, Any]:
    """Match customers to CRM contacts (and their accounts)."""
    spec = table("silver.customer_crm_links")
    engine = ctx.engine()
    links = silver.link_customers_to_crm(engine.scan(table("silver.customers")), engine.scan(table("silver.contacts")))
    written = engine.overwrite(spec, links)
    return summary_of("silver", spec, rows_written=written.rows, version=written.version)


