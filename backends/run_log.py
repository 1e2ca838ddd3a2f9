"""The log of finished daily runs: ``<lake>/_runs/daily``, one row per run that completed a date.

A backfill reads it to skip dates already done; each row also says when the run held the lake's run lock,
so overlapping runs would show. One Delta append per finished run (delta-rs, whichever engine ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import lake_log


@dataclass(frozen=True)
class RunLog:
    lake: Lake

    def history(self) -> list[dict[str, Any]]:
        return lake_log(self.lake, "runs").rows()

    def done_dates(self) -> set[date]:
        return {r["run_date"] for r in self.history()}

    def went_without(self) -> dict[date, list[str]]:
        """For each done date, the entities its latest run was allowed to go without (empty: none)."""
        return {r["run_date"]: list(r.get("missing") or []) for r in self.history()}

    def record(self, *, run_date: date, run_id: str, flow: str, backend: str, release_id: str | None,
               locked_at: datetime, finished_at: datetime, forced: bool, missing: list[str] | None = None) -> None:
        lake_log(self.lake, "runs").append([{
            "run_date": run_date, "run_id": run_id, "flow": flow, "backend": backend, "release_id": release_id,
            "locked_at": locked_at, "finished_at": finished_at, "forced": forced, "missing": missing or [],
        }])
