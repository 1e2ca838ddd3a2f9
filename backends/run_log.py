"""The daily runs that finished a date, as rows of the run log ``<lake>/_ledger/runs`` (contracts/logs.py).

The run log holds one row per data task run (``level = "task"``, tasks/tracking.py) and one row per daily run
that completed its date (``level = "run"``, written here). A backfill reads the run rows to skip dates already
done; each also says when the run took the lake's run lock, so overlapping runs would show. One Delta append per
finished run (delta-rs, whichever engine ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import lake_log

TASK_ROWS = "task"
RUN_ROWS = "run"


@dataclass(frozen=True)
class RunLog:
    lake: Lake

    def rows(self, level: str) -> list[dict[str, Any]]:
        """The run log's rows of one ``level`` (``task`` or ``run``), oldest first."""
        return [r for r in lake_log(self.lake, "ledger").rows() if r["level"] == level]

    def history(self) -> list[dict[str, Any]]:
        """Every daily run that finished a date, oldest first, with when it finished (``finished_at``)."""
        return [{**r, "finished_at": r["started_at"] + timedelta(seconds=r["duration_s"])}
                for r in self.rows(RUN_ROWS)]

    def done_dates(self) -> set[date]:
        return {r["run_date"] for r in self.history()}

    def went_without(self) -> dict[date, list[str]]:
        """For each done date, the entities its latest run was allowed to go without (empty: none)."""
        return {r["run_date"]: list(r.get("missing") or []) for r in self.history()}

    def record(self, *, run_date: date, run_id: str, flow: str, backend: str, release_id: str | None,
               locked_at: datetime, finished_at: datetime, forced: bool, missing: list[str] | None = None) -> None:
        """Add the row of a run that finished ``run_date`` (it started when it took the lock)."""
        lake_log(self.lake, "ledger").append([{
            "run_id": run_id, "flow": flow, "task": flow, "task_run_id": run_id, "table": None,
            "run_date": run_date, "versions_read": "{}", "status": "completed", "started_at": locked_at,
            "duration_s": (finished_at - locked_at).total_seconds(), "engine": backend, "level": RUN_ROWS,
            "release_id": release_id, "locked_at": locked_at, "forced": forced, "missing": missing or [],
        }])
