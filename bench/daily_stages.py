"""Benchmark: one day at scale N on each engine side by side; wall time per stage and table (the median of
``--passes`` runs) as a ratio to the laptop engine and to the physical guide, and each engine's peak RSS.

    .venv/bin/python bench/daily_stages.py --scale 10 [--days 1] [--engines polars,sail,jvm] [--passes 3]

The physical guide is what one pass over the day's data costs on this machine's cores at the rates of
``GUIDE``: bronze decodes the day's landing bytes, silver and gold scan their input rows once. A ratio of 3 to
the guide means the stage costs three such passes. The last run's table is also written to
``bench/out/daily_stages-scale<N>-latest.md`` (with the command that made it), which the README's figures come from.

Generates (once, cached under bench/out/) the landing files, then runs the daily flow's task bodies for each
engine in its own process against a fresh lake, without the Prefect API (so orchestration overhead is not
counted). Engines: ``polars`` (Polars + delta-rs), ``sail`` (the Spark engine on an embedded Sail Spark
Connect server, in the same process), ``jvm`` (the Spark engine on classic PySpark ``local[2]``; it needs
Delta jars, so where they are missing the table says why it could not run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = {
    "polars": {"backend": "polars"},
    "sail": {"backend": "spark"},
    "jvm": {"backend": "spark", "spark_master": "local[2]"},
}
STAGES = ("bronze", "silver", "gold")
#: The physical guide of issue 27: Parquet decode per core (bytes/s) and scan-aggregate per core (rows/s).
GUIDE = {"decode_bytes_per_s": 225e6, "scan_rows_per_s": 6.5e6}


def timed_contract_checks() -> dict[str, float]:
    """Accumulate the time spent checking written rows against their contracts (the compiled checks, one pass on
    both engines; pandera runs only when a check fails); the benchmark reports it as a share of the silver stage."""
    from lakehouse.backends.polars import engine as polars_delta
    from lakehouse.backends.spark import engine as spark_delta

    spent = {"silver": 0.0, "all": 0.0, "stage": ""}  # type: ignore[dict-item]

    def timing(fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["all"] += time.perf_counter() - t
                if spent["stage"] == "silver":
                    spent["silver"] += time.perf_counter() - t
        return wrapper

    spark_delta.count_violations = timing(spark_delta.count_violations)
    polars_delta.count_violations = timing(polars_delta.count_violations)
    return spent  # type: ignore[return-value]


def run_engine(engine: str, landing: Path, lake: Path, days: int, start: date) -> dict:
    """Run the stages of every day on ``engine`` in this process; the last day's timings."""
    from bench.day import daily_steps
    from lakehouse.tasks.context import RunContext

    shutil.rmtree(lake, ignore_errors=True)
    spent = timed_contract_checks()
    timings: list[tuple[str, str, float, int]] = []
    stage_peak: dict[str, float] = {}  # the process's peak RSS (MiB) when each stage of the last day ended
    for i in range(days):
        day = start + timedelta(days=i)
        ctx = RunContext(run_date=day, run_id=f"bench-{day}", started_at=datetime.now(UTC),
                         overrides={"lake_root": str(lake), "landing_root": str(landing), **ENGINES[engine]})
        spent["silver"] = 0.0
        for stage, name, run in daily_steps(ctx):
            spent["stage"] = stage  # type: ignore[assignment]
            t = time.perf_counter()
            summary = run()  # a task's summary dict; None or a count for the gates and the ledger
            if i == days - 1:
                got = summary if isinstance(summary, dict) else {}
                timings.append((stage, name, time.perf_counter() - t, got.get("rows_written", 0) or 0,
                                got.get("rows_in", 0) or 0))
                stage_peak[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"engine": engine, "timings": timings, "peak_mib": peak_mib, "stage_peak_mib": stage_peak,
            "contract_silver_s": spent["silver"]}


def child(engine: str, landing: Path, lake: Path, days: int, start: date, out: Path) -> None:
    try:
        result = run_engine(engine, landing, lake, days, start)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not a crash of the whole benchmark
        result = {"engine": engine, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    out.write_text(json.dumps(result))
    from lakehouse.backends.spark.session import stop_sessions

    stop_sessions()


def merged(passes: list[dict]) -> dict:
    """One engine's passes as one result: the median time of every step, the largest peak RSS."""
    ran = [p for p in passes if "timings" in p]
    if not ran:
        return passes[-1]
    steps = [(st, n, rows, rows_in) for st, n, _, rows, rows_in in ran[0]["timings"]]
    secs = [[t[2] for t in p["timings"]] for p in ran]
    return {"engine": ran[0]["engine"], "passes": len(ran),
            "timings": [(st, n, statistics.median(s[i] for s in secs), rows, rows_in)
                        for i, (st, n, rows, rows_in) in enumerate(steps)],
            "peak_mib": max(p["peak_mib"] for p in ran),
            "stage_peak_mib": {st: max(p["stage_peak_mib"].get(st, 0) for p in ran) for st in STAGES},
            "contract_silver_s": statistics.median(p["contract_silver_s"] for p in ran)}


def guide_seconds(base: dict, landing_bytes: int, cores: int) -> dict[str, float]:
    """One pass over each stage's input at the guide's rates on ``cores`` cores: bronze decodes the day's landing
    bytes, silver scans the bronze rows it reads, gold the silver rows the day wrote."""
    by_stage = {st: [t for t in base["timings"] if t[0] == st] for st in STAGES}
    silver_in = sum(t[4] for t in by_stage["silver"])
    gold_in = sum(t[3] for t in by_stage["silver"])
    rate = GUIDE["scan_rows_per_s"] * cores
    guide = {"bronze": landing_bytes / (GUIDE["decode_bytes_per_s"] * cores), "silver": silver_in / rate,
             "gold": gold_in / rate}
    guide["all"] = sum(guide.values())
    return guide


def report(results: list[dict], day: date, scale: float, landing_bytes: int, command: str) -> str:
    """Print the side-by-side table and return it as Markdown (with the command that made it)."""
    ran = [r for r in results if "timings" in r]
    base = next((r for r in ran if r["engine"] == "polars"), ran[0] if ran else None)
    passes = max((r.get("passes", 1) for r in ran), default=1)
    print(f"\nday {day} at scale {scale:g}: seconds per stage and table (median of {passes} pass(es))"
          + (f", and each engine's time as a ratio to {base['engine']}" if base else ""))
    head = f"{'stage':7} {'table':34} {'rows':>10}" + "".join(
        f" {r['engine']:>9}" + (f" {'x':>6}" if r is not base else "") for r in ran)
    print(head)
    for r in results:
        if "error" in r:
            print(f"{r['engine']}: could not run: {r['error']}")
    if not base:
        return ""
    secs = {r["engine"]: {(st, n): s for st, n, s, *_ in r["timings"]} for r in ran}

    def row(stage: str, label: str, rows: str, pick) -> str:
        line = f"{stage:7} {label:34} {rows:>10}"
        b = pick(secs[base["engine"]])
        for r in ran:
            v = pick(secs[r["engine"]])
            line += f" {v:9.2f}" + (f" {v / b:6.1f}" if r is not base else "")
        return line

    for st, name, _, rows, _ in base["timings"]:
        print(row(st, name, f"{rows:,}", lambda d, k=(st, name): d[k]))

    def stage_total(stage: str):
        return lambda d: sum(v for (st, _), v in d.items() if st == stage or stage == "all")

    for stage in STAGES:
        print(row(stage, "(stage total)", "", stage_total(stage)))
    print(row("all", "(data work)", "", stage_total("all")))
    print("peak RSS (MiB): " + ", ".join(f"{r['engine']} {r['peak_mib']:,.0f} (by the end of bronze, silver, gold: "
                                         + ", ".join(f"{r['stage_peak_mib'][st]:,.0f}" for st in STAGES) + ")"
                                         for r in ran))
    for r in ran:
        stage = sum(v for (st, _), v in secs[r["engine"]].items() if st == "silver")
        gate = secs[r["engine"]][("silver", "(gate)")]
        checks = r["contract_silver_s"] + gate
        print(f"contract checks in silver on {r['engine']}: {r['contract_silver_s']:.2f} s validating written rows "
              f"+ {gate:.2f} s gate = {checks:.2f} s, {checks / stage:.1%} of the silver stage's {stage:.2f} s")
    cores = os.cpu_count() or 1
    guide = guide_seconds(base, landing_bytes, cores)
    print(f"physical guide on {cores} core(s) (one pass: {GUIDE['decode_bytes_per_s'] / 1e6:.0f} MB/s decode, "
          f"{GUIDE['scan_rows_per_s'] / 1e6:.1f}M rows/s scan, per core): "
          + ", ".join(f"{st} {g:.2f} s" for st, g in guide.items()))
    others = [r for r in ran if r is not base]
    heads = (["stage"] + [r["engine"] for r in ran] + [f"{r['engine']} / {base['engine']}" for r in others]
             + ["guide"] + [f"{r['engine']} / guide" for r in ran])
    md = [f"`{command}`: day {day}, scale {scale:g}, median of {passes} pass(es), {cores} core(s)", "",
          "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for stage in (*STAGES, "all"):
        t = {r["engine"]: stage_total(stage)(secs[r["engine"]]) for r in ran}
        cells = ([stage] + [f"{t[r['engine']]:.1f} s" for r in ran]
                 + [f"{t[r['engine']] / t[base['engine']]:.1f}x" for r in others]
                 + [f"{guide[stage]:.2f} s"] + [f"{t[r['engine']] / guide[stage]:.1f}x" for r in ran])
        md.append("| " + " | ".join(cells) + " |")
    blank = " |" * (len(heads) - 1 - len(ran))
    for stage in STAGES:  # the peak is the process's: a stage's row is the peak so far when it ended
        md.append(f"| peak RSS by the end of {stage} | "
                  + " | ".join(f"{r['stage_peak_mib'][stage] / 1024:.1f} GiB" for r in ran) + " |" + blank)
    records = sum(t[4] for t in base["timings"] if t[0] == "bronze")  # landing records read by the day
    md.append(f"| µs per landing record ({records:,}) | "
              + " | ".join(f"{stage_total('all')(secs[r['engine']]) / max(records, 1) * 1e6:.1f}" for r in ran) + " |"
              + blank)
    text = "\n".join(md) + "\n"
    print("\n" + text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--days", type=int, default=1, help="days generated; the last one is measured")
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 11, 1))
    p.add_argument("--engines", default="polars", help=f"comma-separated, among {list(ENGINES)}")
    p.add_argument("--passes", type=int, default=1, help="runs per engine (each in its own process); medians")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        p.error(f"expected --engines among {list(ENGINES)}, got {unknown}")

    out = ROOT / "bench" / "out" / f"scale{args.scale:g}-days{args.days}"
    landing = out / "landing"
    if args.child:
        child(args.child, landing, out / f"lake-{args.child}", args.days, args.start, args.out)
        return
    if not landing.exists():
        from lakehouse.backends.sources.sample import generate

        t = time.perf_counter()
        generate(landing, days=args.days, scale=args.scale, seed=42, start=args.start)
        print(f"generated scale {args.scale:g} x {args.days} day(s) in {time.perf_counter() - t:.1f} s")
    # Read every landing file once so no engine pays for a cold page cache that the next one finds warm.
    warmed = sum(len(f.read_bytes()) for f in landing.rglob("*") if f.is_file())
    print(f"landing: {warmed / 2**20:,.0f} MiB read once to warm the page cache")
    if args.passes < 1:
        p.error(f"expected --passes as an integer >= 1, got {args.passes}")
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for n in range(args.passes):  # engines alternate, so a machine slowing down weighs on each alike
        for engine in engines:
            result_file = out / f"result-{engine}.json"
            result_file.unlink(missing_ok=True)
            print(f"running {engine} (pass {n + 1} of {args.passes}) ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--scale", str(args.scale), "--days", str(args.days),
                                   "--start", args.start.isoformat(), "--child", engine, "--out", str(result_file)],
                                  check=False)
            runs[engine].append(json.loads(result_file.read_text()) if result_file.exists()
                                else {"engine": engine, "error": f"benchmark process exited with {proc.returncode}"})
    day = args.start + timedelta(days=args.days - 1)
    day_bytes = sum(f.stat().st_size for f in landing.glob(f"*/*/{day.isoformat()}/*") if f.is_file())
    command = " ".join(["python bench/daily_stages.py", *sys.argv[1:]])
    text = report([merged(r) for r in runs.values()], day, args.scale, day_bytes, command)
    if text:
        (ROOT / "bench" / "out" / f"daily_stages-scale{args.scale:g}-latest.md").write_text(text)


if __name__ == "__main__":
    main()
