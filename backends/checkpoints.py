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

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog, lake_log
from lakehouse.contracts.landing import LandingEntity


@dataclass(frozen=True)
class Checkpoints:
    lake: Lake
    entity: LandingEntity

    @property
    def log(self) -> LakeLog:
        return lake_log(self.lake, "checkpoints", source=self.entity.source, entity=self.entity.entity)

    def history(self) -> list[dict[str, Any]]:
        """Every checkpoint row, in commit order."""
        return self.log.rows()

    def applied(self) -> set[str]:
        """Every file (its path under the landing root) already applied to bronze."""
        return {f for row in self.history() for f in row["files"]}

    def record(self, files: list[str], lines: list[int], *, rows: int, quarantined: int, bronze_version: int,
               recovered: bool, run_id: str, run_date: date) -> int:
        """Append one checkpoint row (one Delta commit); its sequence number."""
        seq = len(self.history()) + 1
        self.log.append([{
            "seq": seq, "files": files, "lines": lines, "rows": rows, "quarantined": quarantined,
            "bronze_version": bronze_version, "recovered": recovered, "run_id": run_id, "run_date": run_date,
            "committed_at": datetime.now(UTC),
        }])
        return seq
