"""Benchmark: one day at scale N on the laptop engine; wall time per stage and table, and peak RSS.

    .venv/bin/python bench/daily_stages.py --scale 10 [--days 1] [--keep]

Generates (once, cached under bench/out/) the landing files, then runs the daily flow's task bodies in
this process against a fresh lake, without the Prefect API (so orchestration overhead is not counted).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--days", type=int, default=1, help="days generated; the last one is measured")
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 11, 1))
    args = p.parse_args()

    from contracts.landing import LANDING_ENTITIES
    from flows.context import RunContext
    from flows.stages import GOLD_ORDER, SILVER_ORDER, build_gold, ingest_entity, link_crm, refine_table
    from tasks.sample_data import generate

    out = ROOT / "bench" / "out" / f"scale{args.scale:g}-days{args.days}"
    landing, lake = out / "landing", out / "lake"
    if not landing.exists():
        t = time.perf_counter()
        generate(landing, days=args.days, scale=args.scale, seed=42, start=args.start)
        print(f"generated scale {args.scale:g} x {args.days} day(s) in {time.perf_counter() - t:.1f} s")
    shutil.rmtree(lake, ignore_errors=True)

    timings: list[tuple[str, str, float, int]] = []
    for i in range(args.days):
        day = args.start + timedelta(days=i)
        ctx = RunContext(run_date=day, run_id=f"bench-{day}", started_at=datetime.now(UTC),
                         overrides={"lake_root": str(lake), "landing_root": str(landing)})
        measured = i == args.days - 1
        steps = ([("bronze", e.name, ingest_entity.fn, (ctx, e.name)) for e in LANDING_ENTITIES]
                 + [("silver", n, refine_table.fn, (ctx, n)) for n in SILVER_ORDER]
                 + [("silver", "silver.customer_crm_links", link_crm.fn, (ctx,))]
                 + [("gold", n, build_gold.fn, (ctx, n)) for n in GOLD_ORDER])
        for stage, name, fn, fargs in steps:
            t = time.perf_counter()
            summary = fn(*fargs)
            if measured:
                timings.append((stage, name, time.perf_counter() - t, summary.get("rows_written", 0)))

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nday {args.start + timedelta(days=args.days - 1)} at scale {args.scale:g}")
    print(f"{'stage':8} {'table':36} {'seconds':>8} {'rows written':>13}")
    for stage, name, secs, rows in timings:
        print(f"{stage:8} {name:36} {secs:8.2f} {rows:13,}")
    for stage in ("bronze", "silver", "gold"):
        print(f"{stage:8} {'(stage total)':36} {sum(s for st, _, s, _ in timings if st == stage):8.2f}")
    print(f"{'all':8} {'(data work)':36} {sum(s for *_, s, _ in timings):8.2f}")
    print(f"peak RSS: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
