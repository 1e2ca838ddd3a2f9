"""Benchmark: a large Redshift extract (PostgreSQL on loopback) into landing files, then into bronze.

    .venv/bin/python bench/extract.py --rows 2000000

Starts PostgreSQL (lakehouse.testing.servers) and a throw-away Prefect server (for the password's Secret block),
fills ``customer_behaviour`` with ``--rows`` rows of one day on the server (generate_series), then runs in this
process, through the task bodies the daily flow runs:

* **extract**: ``redshift.customer_behaviour`` for that day (server-side cursor, ``--batch-rows`` per fetch,
  ``--file-rows`` per landing file);
* **bronze**: the bronze ingest of those files (``sources.bronze_files_per_commit`` files per commit).

It prints rows, seconds, rows per second, files, and the growth of this process's peak RSS during each step,
next to the size of the whole extract as an Arrow table (read back afterwards): the memory a connector that
held the table would need at least.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAY = date(2026, 11, 2)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fill(info: dict, rows: int) -> None:
    import psycopg

    with psycopg.connect(host=info["host"], port=info["port"], user=info["user"], password=info["password"],
                         dbname=info["database"], autocommit=True) as conn:
        conn.execute("CREATE TABLE public.customer_behaviour (customer_id VARCHAR, activity_date DATE, sessions "
                     "BIGINT, page_views BIGINT, add_to_cart BIGINT, time_on_site_s BIGINT, extracted_at TIMESTAMP)")
        conn.execute(
            "INSERT INTO public.customer_behaviour SELECT 'C' || lpad(i::text, 8, '0'), DATE '2026-11-02', "
            "1 + i %% 9, 3 + i %% 41, i %% 5, 30 + i %% 3600, TIMESTAMP '2026-11-02 00:00:00' + (i %% 86400) * "
            "INTERVAL '1 second' FROM generate_series(1, %s) AS i", (rows,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--file-rows", type=int, default=50_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    import polars as pl
    from prefect.blocks.system import Secret
    from prefect.testing.utilities import prefect_test_harness

    from lakehouse.deployments.settings import cached_settings
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.extract import extract_entity
    from lakehouse.testing.servers import start_postgres, stop_postgres

    proc, info = start_postgres()
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        t = time.perf_counter()
        _fill(info, args.rows)
        print(f"filled {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        settings = {"HOST": info["host"], "PORT": str(info["port"]), "USER": info["user"], "DATABASE": info["database"],
                    "SSLMODE": "disable", "SECRET": "prefect-secret:bench-redshift"}
        for k, v in settings.items():
            os.environ[f"LAKEHOUSE_SOURCES__REDSHIFT__{k}"] = v
        os.environ["LAKEHOUSE_SOURCES__FILE_ROWS"] = str(args.file_rows)
        os.environ["LAKEHOUSE_SOURCES__BATCH_ROWS"] = str(args.batch_rows)
        cached_settings.cache_clear()
        with prefect_test_harness(server_startup_timeout=120):
            Secret(value=info["password"]).save("bench-redshift", overwrite=True)
            (work / "landing").mkdir()
            ctx = RunContext(run_date=DAY, run_id="bench", started_at=datetime.now(UTC),
                             overrides={"lake_root": str(work / "lake"), "landing_root": str(work / "landing")})
            name = "redshift.customer_behaviour"
            for step, run in (("extract", extract_entity.fn), ("bronze", ingest_entity.fn)):
                before, t = _peak_mb(), time.perf_counter()
                summary = run(ctx, name)
                seconds, grown = time.perf_counter() - t, _peak_mb() - before
                rows = summary.get("rows_written", 0)
                print(f"{step:8} {rows:>10,} rows  {seconds:7.1f} s  {rows / seconds:>10,.0f} rows/s  "
                      f"files {summary.get('files', summary.get('new_files'))}  peak RSS grew {grown:,.0f} MB "
                      f"(to {_peak_mb():,.0f} MB)")
        folder = work / "landing" / "redshift" / "customer_behaviour" / DAY.isoformat()
        whole = pl.concat([pl.read_csv(f, infer_schema=False) for f in sorted(folder.glob("extract-*.csv"))])
        print(f"the whole extract as one Arrow table: {whole.height:,} rows, {whole.estimated_size('mb'):,.0f} MB")
    finally:
        stop_postgres(proc, info)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
