"""One day of the daily flow as its task bodies, in the flow's order, without the Prefect API: what the
benchmarks time (so orchestration overhead is not counted). The bodies keep their run ledger rows and lineage
events (tasks/tracking.py), and the day ends with the ledger's append, as a flow's stages do."""

from __future__ import annotations

from typing import Any


def daily_steps(ctx: Any) -> list[tuple[str, str, Any]]:
    """The daily flow's task bodies in its order, as (stage, label, thunk)."""
    from lakehouse.contracts.catalog import build_order, conform_order
    from lakehouse.contracts.landing import LANDING_ENTITIES
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.tasks.gates import check_gate
    from lakehouse.tasks.gold import build_gold, plan_gold
    from lakehouse.tasks.release import release_gold
    from lakehouse.tasks.silver import link_crm, refine_table
    from lakehouse.tasks.tracking import flush_ledger

    state: dict[str, Any] = {"bronze": [], "silver": [], "gold": []}

    def keep(stage: str, fn: Any, *args: Any) -> Any:
        def run() -> Any:
            out = fn(*args)
            state[stage].append(out)
            return out
        return run

    def gold(name: str) -> Any:
        return keep("gold", lambda: build_gold.fn(ctx, name, state["plan"]))

    def plan() -> Any:
        state["plan"] = plan_gold.fn(ctx)
        return {"table": "(plan)", "order_dates": len(state["plan"] or [])}

    return ([("bronze", e.name, keep("bronze", ingest_entity.fn, ctx, e.name)) for e in LANDING_ENTITIES]
            + [("bronze", "(gate)", lambda: check_gate.fn(ctx, "bronze", state["bronze"]))]
            + [("silver", n, keep("silver", refine_table.fn, ctx, n)) for n in conform_order()]
            + [("silver", "silver.customer_crm_links", keep("silver", link_crm.fn, ctx))]
            + [("silver", "(gate)", lambda: check_gate.fn(ctx, "silver", state["silver"]))]
            + [("gold", "(plan: changed order dates)", plan)]
            + [("gold", n, gold(n)) for n in build_order("gold")]
            + [("gold", "(audit + release)", lambda: release_gold.fn(
                ctx, {s["table"]: s["version"] for s in state["gold"]}, state["plan"]))]
            + [("gold", "(run ledger)", lambda: flush_ledger(ctx))])
