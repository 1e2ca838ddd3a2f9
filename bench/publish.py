"""Benchmark: publishing a gold release to Snowflake (fakesnow's server on loopback, the real connector).

    .venv/bin/python bench/publish.py --scale 10 --days 30

Takes the lake of ``bench/incremental.py`` (built and cached under bench/out/ on first use), starts fakesnow's
server (lakehouse.testing.fakesnow_server) and publishes every table of the current gold release twice, each time
through the task body the flow runs (backends/destinations/snowflake.py: Parquet files → table stage → COPY INTO staging →
one transaction of DELETE + MERGE + audit row):

* **first**: into an empty database (every row inserted);
* **again**: the same tables under a new batch id into the full target (every row matched, none changed).

It prints rows, seconds and rows per second per table: staging alone (Parquet + PUT + COPY) and in all.
fakesnow runs on DuckDB on this machine, so the figures say what the client side and the load path cost
here, not what a Snowflake warehouse would take.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

from lakehouse.backends.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    from bench.incremental import history_lake

    _, lake, _ = history_lake(args.scale, args.days, args.seed)
    from lakehouse.testing.servers import start_fakesnow, stop

    server, info = start_fakesnow(Path(tempfile.mkdtemp(prefix="bench-fakesnow-")))
    try:
        run(lake, info["port"])
    finally:
        stop(server)


def run(lake: Path, port: int) -> None:
    import snowflake.connector
    from pydantic import SecretStr

    from lakehouse.backends.destinations import snowflake as destination
    from lakehouse.backends.releases import Releases
    from lakehouse.contracts.catalog import build_order, table
    from lakehouse.deployments.settings import SnowflakeSettings, load_settings
    
    database = f"BENCH_{uuid.uuid4().hex[:6].upper()}"
    admin = snowflake.connector.connect(user="admin", password="admin", account="fakesnow", host="127.0.0.1",
                                        port=port, protocol="http")
    admin.cursor().execute(f"CREATE DATABASE {database}")
    admin.close()
    target = SnowflakeSettings(account="fakesnow", user="bench", host="127.0.0.1", port=port, protocol="http",
                               database=database, schema="GOLD", secret="prefect-secret:unused")
    secret = SecretStr("fakesnow does not check it")
    settings = load_settings(lake_root=str(lake))
    release = Releases(Lake(settings.lake_root)).current()
    print(f"release {release.release_id} of {lake} → fakesnow {database}.GOLD (file rows {target.stage_file_rows:,})")
    print(f"{'pass':6} {'table':26} {'rows':>10} {'stage s':>8} {'stage rows/s':>13} {'total s':>8} {'rows/s':>10}"
          "  inserted/updated/deleted")
    totals: dict[str, list[float]] = {}
    for n, label in enumerate(("first", "again"), 1):
        for name in build_order("gold"):
            conn = destination.connect(target, secret)
            done = destination.load_table(conn.cursor(), Lake(settings.lake_root), table(name), release_id=f"bench-{n}",
                                        version=release.versions[name], run_id="bench",
                                        file_rows=target.stage_file_rows)
            conn.close()
            rows, stage_s, all_s = done["rows_staged"], done["stage_seconds"], done["seconds"]
            total = totals.setdefault(label, [0, 0.0, 0.0])
            total[0] += rows
            total[1] += stage_s
            total[2] += all_s
            print(f"{label:6} {name:26} {rows:>10,} {stage_s:>8.2f} {rows / stage_s:>13,.0f} {all_s:>8.2f} "
                  f"{rows / all_s:>10,.0f}  {done['inserted']}/{done['updated']}/{done['deleted']}")
        rows, stage_s, all_s = totals[label]
        print(f"{label:6} {'all tables':26} {int(rows):>10,} {stage_s:>8.2f} {rows / stage_s:>13,.0f} {all_s:>8.2f} "
              f"{rows / all_s:>10,.0f}")
    print(f"({os.cpu_count()} cores; fakesnow is DuckDB: these are the client side and load path on this machine)")


if __name__ == "__main__":
    main()
