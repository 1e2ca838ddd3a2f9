"""The gate task: a layer's batch stops the flow when it quarantined more than its tables' gates allow,
broke a declared reference, or its source is stale."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import narwhals as nw
from prefect.artifacts import create_table_artifact

from lakehouse.contracts.catalog import Gate, quarantine_for, table, tables
from lakehouse.tasks.bronze import newest_delivery
from lakehouse.tasks.context import RunContext, in_run
from lakehouse.tasks.tracking import lake_task
from lakehouse.tasks.transforms import audit


class GateFailedError(RuntimeError):
    """A table's batch broke its quality gate; the flow stops before the next layer."""


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
    lake = ctx.lake()
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
    if in_run():
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
