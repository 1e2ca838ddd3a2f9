"""The Prefect tasks of the daily flow: one per table per stage. Each reads through the engine, calls the
backend-agnostic transforms in ``tasks/``, writes through the engine, and returns a small summary."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import narwhals as nw
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff

from backends import Engine
from backends.releases import Releases
from contracts.catalog import Gate, TableSpec, bronze_for, quarantine_for, table, tables
from contracts.landing import landing_entity
from flows.context import RunContext
from tasks import audit, bronze, gold, silver

# I/O can fail transiently (object stores, file systems under load): retry with backoff.
IO_RETRIES = {"retries": 2, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "retry_jitter_factor": 0.5}


class AccountingError(RuntimeError):
    """A stage lost or invented rows: input rows != accepted + quarantined."""


class GateFailedError(RuntimeError):
    """A table's batch broke its quality gate; the flow stops before the next layer."""


class AuditFailedError(RuntimeError):
    """Tables failed their audit, so they were not released; the previous release stays current."""


def _summary(stage: str, spec: TableSpec, **figures: Any) -> dict[str, Any]:
    return {"stage": stage, "table": spec.name, **figures}


def _quarantine(engine: Engine, spec: TableSpec, data: pa.Table, ctx: RunContext) -> tuple[int, dict[str, int]]:
    """Write rejected rows (rule, reason, record, record_hash, source_file) to ``spec``'s quarantine table."""
    if data.num_rows == 0:
        return 0, {}
    qspec = quarantine_for(spec)
    stamped = engine.from_arrow(data).with_columns(
        nw.col("record_hash").cum_count().over("record_hash", "rule", order_by="source_file").alias("occurrence"),
        nw.lit(ctx.run_id).alias("run_id"),
        nw.lit(ctx.run_date).cast(nw.Date()).alias("run_date"),
    )
    engine.merge(qspec, stamped, insert_only=True)
    return data.num_rows, dict(Counter(data.column("rule").to_pylist()))


@task(name="bronze", task_run_name="bronze-{entity_name}", cache_policy=NO_CACHE, **IO_RETRIES)
def ingest_entity(ctx: RunContext, entity_name: str) -> dict[str, Any]:
    """Append the run date's new landing files of one entity to its bronze table."""
    entity = landing_entity(entity_name)
    spec = bronze_for(entity)
    engine = ctx.engine()
    root = ctx.landing_dir()
    folder = root / entity.source / entity.entity / ctx.run_date.isoformat()
    files = sorted(p for p in folder.glob(f"*{entity.suffix}") if p.is_file()) if folder.is_dir() else []
    done = set(engine.to_arrow(bronze.ingested_files(engine.scan(spec))).column("_source_file").to_pylist())
    new = [(f, f.relative_to(root).as_posix()) for f in files]
    new = [(f, label) for f, label in new if label not in done]
    read = engine.read_landing(entity, new) if new else None
    quarantined, rules = (0, {})
    if read is not None and read.rejects.num_rows:
        quarantined, rules = _quarantine(engine, spec, read.rejects, ctx)
    rows = 0
    version = engine.version(spec)
    if read is not None:
        stamped = engine.materialize(
            bronze.with_lineage(read.rows, run_id=ctx.run_id, ingested_at=ctx.started_at, ingest_date=ctx.run_date)
        )
        result = engine.append(spec, stamped)
        rows, version = result.rows, result.version
    if not files:
        _logger().warning("no landing files for %s on %s under %s", entity.name, ctx.run_date, folder)
    refused = read.refused.to_pylist() if read is not None else []
    for r in refused:
        _logger().error("refused %s (%s): %s", r["source_file"], r["problem"], r["reason"])
    if refused:
        now = datetime.now(UTC)
        ctx.settings().lake().append_log(refused_log(entity.source, entity.entity), pa.Table.from_pylist(
            [{**r, "run_id": ctx.run_id, "run_date": ctx.run_date, "refused_at": now} for r in refused],
            schema=REFUSED_LOG_SCHEMA))
    return _summary("bronze", spec, files=len(files), new_files=len(new), rows_in=rows + quarantined,
                    accepted=rows, quarantined=quarantined, rules=rules, rows_written=rows, version=version,
                    refused=[r["source_file"] for r in refused])


REFUSED_LOG_SCHEMA = pa.schema([
    *((c, pa.string()) for c in ("source_file", "problem", "reason", "run_id")),
    ("run_date", pa.date32()), ("refused_at", pa.timestamp("us", tz="UTC")),
])


def refused_log(source: str, entity: str) -> str:
    """Where files refused for a wrong schema are recorded (each run that refuses one appends a row)."""
    return f"_refused/{source}/{entity}"


def _logger() -> Any:
    """The Prefect run logger inside a run; this module's logger when a task body runs bare (benchmarks)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="silver", task_run_name="silver-{table_name}", cache_policy=NO_CACHE, **IO_RETRIES)
def refine_table(ctx: RunContext, table_name: str) -> dict[str, Any]:
    """Conform the run date's bronze batch into a silver table: quarantine, dedupe latest, merge by key."""
    spec = table(table_name)
    engine = ctx.engine()
    source = table(spec.source or "")
    batch = engine.materialize(bronze.batch_for(engine.scan(source), ctx.run_date))
    done = conform_into_silver(ctx, engine, spec, batch)
    return _summary("silver", spec, **{k: v for k, v in done.items() if k != "accepted_hashes"})


def conform_into_silver(ctx: RunContext, engine: Engine, spec: TableSpec, batch: nw.LazyFrame, *,
                        accepted_hashes: bool = False) -> dict[str, Any]:
    """Conform a bronze ``batch`` of ``spec``'s entity: quarantine what fails a rule, merge the rest by key.
    Every row is accounted for (rows in = accepted + quarantined) or nothing is merged. With
    ``accepted_hashes``, also the ``_record_hash`` of every accepted row (for the replay log)."""
    settings = ctx.settings()
    refs = {name: engine.scan(table(name)) for name in silver.REFS_NEEDED.get(spec.name, ())}
    result = silver.conform(spec.name, batch, refs=refs, hmac_key=settings.require_hmac_key(),
                            fx_window_days=settings.fx_window_days, run_date=ctx.run_date,
                            checkpoint=engine.materialize)
    valid = engine.materialize(result.valid)
    rows_in, accepted = engine.count(batch), engine.count(valid)
    rejected = result.quarantine_records(engine.to_arrow(result.quarantined))
    quarantined, rules = _quarantine(engine, spec, rejected, ctx)
    if rows_in != accepted + quarantined:
        msg = f"{spec.name} on {ctx.run_date}: {rows_in} bronze rows in, {accepted} accepted + {quarantined} quarantined"
        raise AccountingError(msg)
    hashes = engine.to_arrow(valid.select("_record_hash")).column(0).to_pylist() if accepted_hashes else []
    written = engine.merge(spec, silver.latest_per_key(valid, spec))
    return {"rows_in": rows_in, "accepted": accepted, "quarantined": quarantined, "rules": rules,
            "rows_written": written.rows, "version": written.version, "accepted_hashes": hashes}


@task(name="silver-links", cache_policy=NO_CACHE, **IO_RETRIES)
def link_crm(ctx: RunContext) -> dict[str, Any]:
    """Match customers to CRM contacts (and their accounts)."""
    spec = table("silver.customer_crm_links")
    engine = ctx.engine()
    links = silver.link_customers_to_crm(engine.scan(table("silver.customers")), engine.scan(table("silver.contacts")))
    written = engine.overwrite(spec, links)
    return _summary("silver", spec, rows_written=written.rows, version=written.version)


@task(name="gold", task_run_name="gold-{table_name}", cache_policy=NO_CACHE, **IO_RETRIES)
def build_gold(ctx: RunContext, table_name: str) -> dict[str, Any]:
    """Rebuild one gold table from silver (and, for marts, from gold.fact_orders)."""
    spec = table(table_name)
    engine = ctx.engine()

    def s(name: str) -> nw.LazyFrame:
        return engine.scan(table(name))

    builders = {
        "gold.fact_orders": lambda: gold.build_fact_orders(s("silver.orders"), s("silver.order_events")),
        "gold.dim_customer": lambda: gold.build_dim_customer(s("silver.customers"), s("silver.customer_crm_links")),
        "gold.dim_product": lambda: gold.build_dim_product(s("silver.products")),
        "gold.dim_date": lambda: gold.build_dim_date(_calendar(engine, s("gold.fact_orders"))),
        "gold.customer_360": lambda: gold.build_customer_360(
            s("gold.fact_orders"), s("silver.customers"), s("silver.customer_crm_links"), s("silver.accounts"),
            s("silver.opportunities"), s("silver.customer_behaviour")),
        "gold.product_performance": lambda: gold.build_product_performance(s("gold.fact_orders")),
        "gold.customer_segments": lambda: gold.build_customer_segments(s("gold.fact_orders")),
    }
    written = engine.overwrite(spec, builders[spec.name]())
    return _summary("gold", spec, rows_written=written.rows, version=written.version)


def gate_failures(summaries: list[dict[str, Any]], gates: Mapping[str, Gate]) -> list[dict[str, Any]]:
    """The summaries whose quarantined share breaks their table's gate (batches of at least ``min_rows``)."""
    failures = []
    for s in summaries:
        gate, rows = gates.get(s["table"]), s.get("rows_in") or 0
        if gate is None or rows < gate.min_rows:
            continue
        quarantined = s.get("quarantined", 0)
        if quarantined > gate.max_quarantine_rate * rows:
            failures.append({"table": s["table"], "rows_in": rows, "quarantined": quarantined,
                             "limit": gate.max_quarantine_rate, "rules": dict(s.get("rules", {}))})
    return failures


@task(name="gate", task_run_name="gate-{layer}", cache_policy=NO_CACHE)
def check_gate(ctx: RunContext, layer: str, summaries: list[dict[str, Any]]) -> None:
    """Stop the flow when a table of ``layer`` quarantined more than its gate allows in this run, breaks a
    declared reference, or is stale; the failing rules with sample records go to the table artifact
    ``<layer>-gate``."""
    failures = gate_failures(summaries, {t.name: t.gate for t in tables(layer)})  # type: ignore[arg-type]
    engine = ctx.engine()
    broken = [f for spec in tables(layer) if spec.references and engine.exists(spec)  # type: ignore[arg-type]
              for f in audit.check_references(spec, lambda name: engine.scan(table(name)),
                                              lambda frame: engine.to_arrow(frame).to_pylist())]
    for spec in tables(layer):  # type: ignore[arg-type]
        source = table(spec.source) if spec.source else None
        if source is not None and spec.gate.max_age_days is not None and engine.exists(source):
            value = engine.to_arrow(audit.newest(engine.scan(source), "_ingest_date")).column("newest")[0].as_py()
            stale = audit.check_freshness(spec, value, ctx.run_date)
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


@task(name="release-gold", cache_policy=NO_CACHE)
def release_gold(ctx: RunContext, versions: dict[str, int]) -> dict[str, Any]:
    """Audit the gold tables at the versions this run wrote; release them all at once only if every audit
    passes. On failure: a table artifact of the failing rules with sample rows, and an error naming them."""
    engine = ctx.engine()
    releases = Releases(ctx.settings().lake())

    def scan(name: str) -> nw.LazyFrame:
        return engine.scan(table(name), version=versions[name])

    def collect(frame: nw.LazyFrame) -> list[dict[str, Any]]:
        return engine.to_arrow(frame).to_pylist()

    current = releases.current()
    failures = [f for name in versions for f in audit.check_references(table(name), scan, collect)]
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


GOLD_ORDER = ("gold.fact_orders", "gold.dim_customer", "gold.dim_product", "gold.dim_date", "gold.customer_360",
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

