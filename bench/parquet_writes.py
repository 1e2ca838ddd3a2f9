"""Benchmark: the laptop engine's Parquet writer settings against delta-rs' defaults.

    .venv/bin/python bench/parquet_writes.py --scale 10 --days 30 --tables silver.customers,gold.fact_orders

Reads each table from the incremental benchmark's history lake (bench/incremental.py, built and cached under
bench/out/ if missing), then writes it ``--repeat`` times as a new Delta table (with its partitions) with delta-rs' default
writer and with ``backends.polars_delta.writer_properties`` (ZSTD level 1, no dictionary for digest columns),
and reads each back. Prints the median seconds and the size of the Parquet files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(data: object, partition_by: list[str] | None, writer: object, repeat: int) -> tuple[float, float, int]:
    """Median write seconds, median read seconds, Parquet bytes."""
    import polars as pl
    from deltalake import DeltaTable, write_deltalake

    writes, reads, size = [], [], 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            write_deltalake(tmp, data, mode="overwrite", partition_by=partition_by,  # type: ignore[arg-type]
                            writer_properties=writer)  # type: ignore[arg-type]
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            pl.scan_delta(DeltaTable(tmp)).collect()
            reads.append(time.perf_counter() - started)
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))
    return statistics.median(writes), statistics.median(reads), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tables", default="silver.customers,silver.orders,gold.dim_customer,gold.fact_orders")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from backends import Lake
    from backends.polars_delta import digest_columns, writer_properties
    from bench.incremental import history_lake
    from contracts.catalog import table

    _, history, _ = history_lake(args.scale, args.days, args.seed)
    lake = Lake(str(history))
    print(f"{'table':22} {'rows':>9} {'writer':9} {'write s':>8} {'read s':>7} {'MiB':>7}  plain-encoded")
    for name in args.tables.split(","):
        spec = table(name.strip())
        loaded = lake.delta_table(spec)
        assert loaded is not None, f"{spec.name} is not in {history}"
        data = loaded.to_pyarrow_table()
        for label, writer in (("default", None), ("project", writer_properties(spec))):
            write, read, size = measure(data, list(spec.partition_by) or None, writer, args.repeat)
            plain = ", ".join(digest_columns(spec)) if writer is not None else ""
            print(f"{spec.name:22} {data.num_rows:9,} {label:9} {write:8.3f} {read:7.3f} {size / 2**20:7.1f}  {plain}")


if __name__ == "__main__":
    main()
