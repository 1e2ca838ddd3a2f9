"""Stream checkpoints: which micro-batch files of a stream (Kafka order events) bronze has applied.

A stream's micro-batch files are applied to bronze in order, a few per Delta commit. After each commit one row
goes to the Delta table ``<lake>/_checkpoints/<source>/<entity>``: the files it applied (the batch's offsets:
file names and line counts), the rows it wrote and the bronze version it produced. A file in the checkpoint is
never applied again.

Exactly once: a run can die after the bronze commit and before its checkpoint row. The next run finds the
batch's files in bronze (``_source_file`` of the run date's partition) but not in the checkpoint; it records
them as ``recovered`` and does not write them again. Bronze and the checkpoint always agree after a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from backends.lake import Lake
from contracts.landing import LandingEntity

CHECKPOINT_SCHEMA = pa.schema([
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("files", pa.list_(pa.string()), nullable=False),
    pa.field("lines", pa.list_(pa.int64()), nullable=False),  # lines per file: the batch's offsets
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("quarantined", pa.int64(), nullable=False),
    pa.field("bronze_version", pa.int64(), nullable=False),
    pa.field("recovered", pa.bool_(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_date", pa.date32(), nullable=False),
    pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


@dataclass(frozen=True)
class Checkpoints:
    lake: Lake
    entity: LandingEntity

    @property
    def path(self) -> str:
        return f"_checkpoints/{self.entity.source}/{self.entity.entity}"

    def history(self) -> list[dict[str, Any]]:
        """Every checkpoint row, in commit order."""
        rows = self.lake.read_log(self.path)
        return [] if rows is None else sorted(rows.to_pylist(), key=lambda r: r["seq"])

    def applied(self) -> set[str]:
        """Every file (its path under the landing root) already applied to bronze."""
        return {f for row in self.history() for f in row["files"]}

    def record(self, files: list[str], lines: list[int], *, rows: int, quarantined: int, bronze_version: int,
               recovered: bool, run_id: str, run_date: date) -> int:
        """Append one checkpoint row (one Delta commit); its sequence number."""
        seq = len(self.history()) + 1
        self.lake.append_log(self.path, pa.Table.from_pylist([{
            "seq": seq, "files": files, "lines": lines, "rows": rows, "quarantined": quarantined,
            "bronze_version": bronze_version, "recovered": recovered, "run_id": run_id, "run_date": run_date,
            "committed_at": datetime.now(UTC),
        }], schema=CHECKPOINT_SCHEMA))
        return seq
