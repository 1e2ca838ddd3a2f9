"""A writer process for the checkpoint-kill tests (tests/test_crash_safety.py): appends numbered one-row batches to
one table through a project engine, skipping the batches the table already holds, on a lake whose tables write a
Delta checkpoint after every commit. Killed at any moment and run again, it converges to every batch once.

    python tests/checkpoint_writer.py LAKE_ROOT ENGINE BATCHES [SPARK_REMOTE]

Prints ``ready`` once it has read what the table holds, then one line per committed batch."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from lakehouse.backends import Lake, get_backend
from lakehouse.backends.lake import PORTABLE_TABLE_PROPERTIES
from lakehouse.contracts.catalog import TableSpec
from lakehouse.contracts.contract import Contract, optional
from lakehouse.contracts.types import INT64, STRING
from lakehouse.deployments.settings import SparkSettings

SPEC = TableSpec(layer="bronze", entity="kill.batches", mode="append", partition_by=("part",),
                 schema=Contract("bronze.kill.batches", {"batch": optional(INT64), "part": optional(INT64),
                                                         "payload": optional(STRING)}))
# Many files (one per part) make each checkpoint a large share of a commit's time: most kills land in one.
PARTS = 1500


def lake(root: str) -> Lake:
    return Lake(root, table_configuration=PORTABLE_TABLE_PROPERTIES | {"delta.checkpointInterval": "1"})


def main(root: str, engine_name: str, batches: int, remote: str | None = None) -> None:
    settings = SparkSettings(remote=remote) if remote else None
    engine = get_backend(engine_name, lake(root), settings)
    present: set[int] = set()
    if engine.exists(SPEC):
        present = set(engine.to_arrow(engine.scan(SPEC).select("batch").unique()).column("batch").to_pylist())
    print("ready", flush=True)
    if -1 not in present:
        engine.append(SPEC, engine.from_arrow(pl.DataFrame(
            {"batch": [-1] * PARTS, "part": list(range(PARTS)), "payload": ["seed"] * PARTS}).to_arrow()))
    for b in range(batches):
        if b in present:
            continue
        engine.append(SPEC, engine.from_arrow(pl.DataFrame(
            {"batch": [b] * 3, "part": [b % PARTS] * 3, "payload": [f"batch {b}"] * 3}).to_arrow()))
        print(b, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
