"""Benchmark: one incremental day against a full rebuild, on the laptop engine.

    .venv/bin/python bench/incremental.py --scale 10 --days 30

Generates (once, cached under bench/out/) ``days + 1`` days of landing files, builds a lake of the first
``days`` days with the daily path (cached too), then measures, each on its own copy:

* **incremental**: the next day, exactly as the daily flow runs it (ingest, bronze gate, silver merges, links,
  silver gate, gold plan, gold for the changed order dates, release);
* **full rebuild**: every layer from scratch over all ``days + 1`` days: bronze from every landing file,
  silver from the whole bronze table in one conform per table, gold built whole, released.

Both are measured ``--repeat`` times (default 5, alternating, each on a fresh copy): the machine's noise moves
single runs by 15%. It prints each pass's ratio (incremental / full rebuild) and their median, which is the
figure; then each step's median seconds summed per stage, and for every merge of the incremental day the target files
it scanned and the files its predicate skipped (for dim_customer: the customers built again). The task bodies run without the Prefect API, as in
bench/daily_stages.py, so orchestration overhead is not counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def _ctx(day: date, lake: Path, landing: Path, run_id: str) -> Any:
    from lakehouse.tasks.context import RunContext

    return RunContext(run_date=day, run_id=run_id, started_at=datetime.now(UTC),
                      overrides={"lake_root": str(lake), "landing_root": str(landing)})


def full_steps(ctx: Any, days: list[date]) -> list[tuple[str, str, Any]]:
    """Every layer from scratch: bronze from every day's files, silver from all of bronze, gold whole."""
    from lakehouse.contracts.catalog import build_order, conform_order, table
    from lakehouse.contracts.landing import LANDING_ENTITIES
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.tasks.gates import check_gate
    from lakehouse.tasks.gold import build_gold
    from lakehouse.tasks.release import release_gold as release
    from lakehouse.tasks.silver import conform_into_silver, link_crm
    from lakehouse.tasks.tracking import flush_ledger

    versions: dict[str, int] = {}

    def bronze_all(name: str) -> Any:
        def run() -> Any:
            for d in days:
                ingest_entity.fn(ctx.model_copy(update={"run_date": d}), name)
        return run

    def silver_all(name: str) -> Any:
        def run() -> Any:
            engine = ctx.engine()
            spec = table(name)
            batch = engine.materialize(engine.scan(table(spec.source or "")))
            return conform_into_silver(ctx, engine, spec, batch, late_ok=True)  # history is not late
        return run

    def gold_whole(name: str) -> Any:
        def run() -> Any:
            out = build_gold.fn(ctx, name, None)
            versions[name] = out["version"]
            return out
        return run

    summaries: dict[str, list[Any]] = {"silver": []}

    def silver_kept(name: str) -> Any:
        def run() -> Any:
            out = {"stage": "silver", "table": name, **silver_all(name)()}
            summaries["silver"].append(out)
            return out
        return run

    # The same gates as a day (a rebuild is checked too); the bronze gate judges rates the silver one repeats.
    return ([("bronze", e.name, bronze_all(e.name)) for e in LANDING_ENTITIES]
            + [("silver", n, silver_kept(n)) for n in conform_order()]
            + [("silver", "silver.customer_crm_links", lambda: link_crm.fn(ctx))]
            + [("silver", "(gate)", lambda: check_gate.fn(ctx, "silver", summaries["silver"]))]
            + [("gold", n, gold_whole(n)) for n in build_order("gold")]
            + [("gold", "(audit + release)", lambda: release.fn(ctx, versions))]
            + [("gold", "(run ledger)", lambda: flush_ledger(ctx))])


def timed(steps: list[tuple[str, str, Any]]) -> tuple[list[tuple[str, str, float, Any]], float]:
    """Each step's wall seconds, and the process's CPU seconds (user + system, every thread) of all the steps."""
    out = []
    cpu = time.process_time()
    for stage, label, run in steps:
        t = time.perf_counter()
        result = run()
        out.append((stage, label, time.perf_counter() - t, result))
    return out, time.process_time() - cpu


def history_lake(scale: float, days: int, seed: int) -> tuple[Path, Path, list[date]]:
    """Landing files of ``days + 1`` days and a lake of the first ``days`` built with the daily path, both
    cached under bench/out/; the landing folder, the lake and the dates."""
    from bench.day import daily_steps
    from lakehouse.backends.sources.sample import generate

    start = date(2026, 10, 1)
    dates = [start + timedelta(days=i) for i in range(days + 1)]
    tag = f"s{scale:g}-d{days + 1}-seed{seed}"
    landing, history = OUT / f"landing-{tag}", OUT / f"history-{tag}"
    if not (landing / ".complete").exists():
        shutil.rmtree(landing, ignore_errors=True)
        print(f"generating {len(dates)} days at scale {scale:g} into {landing} ...", flush=True)
        generate(landing, days=len(dates), scale=scale, seed=seed, start=start)
        (landing / ".complete").touch()
    if not (history / ".complete").exists():
        shutil.rmtree(history, ignore_errors=True)
        t = time.perf_counter()
        for i, d in enumerate(dates[:-1], 1):
            for _, _, run in daily_steps(_ctx(d, history, landing, f"history-{d}")):
                run()
            print(f"history: {d} done ({i}/{days}, {time.perf_counter() - t:.0f} s)", flush=True)
        (history / ".complete").touch()
    return landing, history, dates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--days", type=int, default=30, help="days of history before the measured day")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5,
                        help="measure both this many times (each on a fresh copy) and report the medians")
    args = parser.parse_args()
    from bench.day import daily_steps

    landing, history, days = history_lake(args.scale, args.days, args.seed)
    fulls, incrementals = [], []
    cpus: dict[str, list[float]] = {"full": [], "incremental": []}
    for i in range(1, args.repeat + 1):
        # A fresh lake folder per pass: the process keeps each lake's loaded Delta logs by path.
        work = OUT / f"work-full-{i}"
        shutil.rmtree(work, ignore_errors=True)
        os.sync()
        steps, cpu = timed(full_steps(_ctx(days[-1], work, landing, f"full-rebuild-{i}"), days))
        fulls.append(steps)
        cpus["full"].append(cpu)
        work = OUT / f"work-incremental-{i}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(history, work, ignore=shutil.ignore_patterns("_results"))
        os.sync()  # the copy's write-back must not run during the measurement
        steps, cpu = timed(daily_steps(_ctx(days[-1], work, landing, f"incremental-{i}")))
        incrementals.append(steps)
        cpus["incremental"].append(cpu)
        print(f"pass {i}/{args.repeat}: incremental {_total(incrementals[-1]):.2f} s, full rebuild "
              f"{_total(fulls[-1]):.2f} s ({_total(incrementals[-1]) / _total(fulls[-1]):.1%})", flush=True)
    for i in range(1, args.repeat):  # keep the last pass's lakes to look at
        shutil.rmtree(OUT / f"work-full-{i}", ignore_errors=True)
        shutil.rmtree(OUT / f"work-incremental-{i}", ignore_errors=True)
    ratios = [_total(i) / _total(f) for i, f in zip(incrementals, fulls, strict=True)]
    report(_median_pass(incrementals), _median_pass(fulls), days[-1], args.scale, args.days, ratios, cpus)


def _total(steps: list) -> float:
    return sum(secs for _, _, secs, _ in steps)


def _median_pass(passes: list[list]) -> list:
    """The passes' steps with each step's median seconds (results from the first pass)."""
    return [(stage, label, statistics.median(p[j][2] for p in passes), result)
            for j, (stage, label, _, result) in enumerate(passes[0])]


def report(incremental: list, full: list, day: date, scale: float, history: int, ratios: list[float],
           cpus: dict[str, list[float]]) -> None:
    cpu_ratios = [i / f for i, f in zip(cpus["incremental"], cpus["full"], strict=True)]
    print(f"\nday {day} at scale {scale:g} on {history} days of history, laptop engine: the median of the "
          f"{len(ratios)} passes' ratios is {statistics.median(ratios):.1%} "
          f"(passes: {', '.join(f'{r:.1%}' for r in ratios)})")
    print(f"in CPU seconds (user + system, every thread; time the machine gave to other work is left out): "
          f"{statistics.median(cpu_ratios):.1%} (passes: {', '.join(f'{r:.1%}' for r in cpu_ratios)}; "
          f"{statistics.median(cpus['incremental']):.2f} s against {statistics.median(cpus['full']):.2f} s, "
          "medians)")
    print("\nmedian seconds per step over the passes, summed per stage")
    print(f"{'stage':8} {'incremental':>12} {'full rebuild':>13} {'ratio':>7}")
    total_i = total_f = 0.0
    for stage in ("bronze", "silver", "gold"):
        i = sum(s for st, _, s, _ in incremental if st == stage)
        f = sum(s for st, _, s, _ in full if st == stage)
        total_i, total_f = total_i + i, total_f + f
        print(f"{stage:8} {i:12.2f} {f:13.2f} {i / f:7.1%}")
    print(f"{'all':8} {total_i:12.2f} {total_f:13.2f} {total_i / total_f:7.1%}")
    print("\nincremental day, step by step (merges: target files scanned / skipped by the predicate)")
    for stage, label, secs, result in incremental:
        extra = ""
        if isinstance(result, dict):
            if result.get("files_scanned") is not None:
                extra = f"merge: {result['files_scanned']} file(s) scanned, {result['files_skipped']} skipped"
                if result.get("history_files_scanned") is not None:
                    extra += (f"; its history table: {result['history_files_scanned']} scanned, "
                              f"{result['history_files_skipped']} skipped")
            elif result.get("order_dates") is not None:
                extra = f"{result['order_dates']} order date(s)"
            elif result.get("customers_rebuilt") is not None:
                extra = f"{result['customers_rebuilt']:,} customer(s) built again, the others kept"
        print(f"  {stage:7} {label:34} {secs:7.2f} s  {extra}")


if __name__ == "__main__":
    main()
