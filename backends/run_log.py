"""The log of finished daily runs: ``<lake>/_runs/daily``, one row per run that completed a date.

A backfill reads it to skip dates already done; each row also says when the run held the lake's run lock,
so overlapping runs would show. One Delta append per finished run (delta-rs, whichever engine ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from backends.lake import Lake

RUN_LOG_SCHEMA = pa.schema([
    pa.field("run_date", pa.date32(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("flow", pa.string(), nullable=False),
    pa.field("backend", pa.string(), nullable=False),
    pa.field("release_id", pa.string(), nullable=True),
    pa.field("locked_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("forced", pa.bool_(), nullable=False),
    # Entities delivered daily that the run was allowed to go without (a backfill runs the date again once
    # they have arrived).
    pa.field("missing", pa.list_(pa.string()), nullable=True),
])


@dataclass(frozen=True)
class RunLog:
    lake: Lake
    path: str = "_runs/daily"

    def history(self) -> list[dict[str, Any]]:
        rows = self.lake.read_log(self.path)
        return [] if rows is None else sorted(rows.to_pylist(), key=lambda r: r["finished_at"])

    def done_dates(self) -> set[date]:
        return {r["run_date"] for r in self.history()}

    def went_without(self) -> dict[date, list[str]]:
        """For each done date, the entities its latest run was allowed to go without (empty: none)."""
        return {r["run_date"]: list(r.get("missing") or []) for r in self.history()}

    def record(self, *, run_date: date, run_id: str, flow: str, backend: str, release_id: str | None,
               locked_at: datetime, finished_at: datetime, forced: bool, missing: list[str] | None = None) -> None:
        self.lake.append_log(self.path, pa.Table.from_pylist([{
            "run_date": run_date, "run_id": run_id, "flow": flow, "backend": backend, "release_id": release_id,
            "locked_at": locked_at, "finished_at": finished_at, "forced": forced, "missing": missing or [],
        }], schema=RUN_LOG_SCHEMA))
