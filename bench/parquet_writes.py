"""Benchmark: the laptop engine's Delta writes (Polars writes the Parquet files, delta-rs commits them) against
delta-rs writing the same table itself.

    .venv/bin/python bench/parquet_writes.py --scale 10 --days 30 --tables silver.customers,gold.fact_orders

Reads each table from the incremental benchmark's history lake (bench/incremental.py, built and cached under
bench/out/ if missing), then writes it ``--repeat`` times as a new Delta table (with its partitions), both ways,
alternating: ``delta-rs`` is ``write_deltalake`` with ZSTD level 1 (what the engine used before), ``project`` is
``backends/polars/delta_files.py`` (``write_files`` and ``commit``: what the engine does now). Each is read back with
Polars. Prints the median seconds and the size of the Parquet files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_delta_rs(root: str, spec: Any, data: Any) -> None:
    from deltalake import WriterProperties, write_deltalake

    write_deltalake(f"{root}/{spec.path}", data.to_arrow().cast(spec.arrow_schema), mode="overwrite",
                    partition_by=list(spec.partition_by) or None,
                    writer_properties=WriterProperties(compression="ZSTD", compression_level=1))


def write_project(root: str, spec: Any, data: Any) -> None:
    from lakehouse.backends import Lake
    from lakehouse.backends.polars.delta_files import commit, write_files

    lake = Lake(root)
    commit(lake, spec, None, write_files(lake, spec, data), mode="overwrite")


def measure(spec: Any, data: Any, writer: Any) -> tuple[float, float, int]:
    """Write seconds, read seconds and Parquet bytes of one write into a fresh folder."""
    import polars as pl
    from deltalake import DeltaTable

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        writer(root, spec, data)
        write = time.perf_counter() - started
        started = time.perf_counter()
        pl.scan_delta(DeltaTable(f"{root}/{spec.path}")).collect()
        read = time.perf_counter() - started
        return write, read, sum(p.stat().st_size for p in Path(root).rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tables", default="silver.customers,silver.orders,gold.dim_customer,gold.fact_orders")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import polars as pl

    from bench.incremental import history_lake
    from lakehouse.backends import Lake
    from lakehouse.contracts.catalog import table

    _, history, _ = history_lake(args.scale, args.days, args.seed)
    lake = Lake(str(history))
    print(f"{'table':22} {'rows':>9} {'writer':9} {'write s':>8} {'read s':>7} {'MiB':>7}")
    for name in args.tables.split(","):
        spec = table(name.strip())
        loaded = lake.delta_table(spec)
        assert loaded is not None, f"{spec.name} is not in {history}"
        data = pl.scan_delta(loaded).select(spec.columns).collect().cast(spec.polars_schema)  # type: ignore[arg-type]
        results: dict[str, tuple[list[float], list[float], int]] = {"delta-rs": ([], [], 0), "project": ([], [], 0)}
        for _ in range(args.repeat):  # alternating, so the machine's drift hits both alike
            for label, writer in (("delta-rs", write_delta_rs), ("project", write_project)):
                w, r, size = measure(spec, data, writer)
                results[label] = (results[label][0] + [w], results[label][1] + [r], size)
        for label, (writes, reads, size) in results.items():
            print(f"{spec.name:22} {data.height:9,} {label:9} {statistics.median(writes):8.3f} "
                  f"{statistics.median(reads):7.3f} {size / 2**20:7.1f}")


if __name__ == "__main__":
    main()
