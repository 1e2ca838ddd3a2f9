"""Reading the run ledger's task rows (``<lake>/_ledger/runs``, one row per data task run, written by
``tasks/tracking.py``; the same log's run rows are backends/run_log.py): every row, the runs they add up to, and
each table's freshness."""

from __future__ import annotations

from typing import Any

from lakehouse.backends.run_log import TASK_ROWS, RunLog


def read_ledger(lake: Any) -> list[dict[str, Any]]:
    """Every task row of the ledger, oldest first (none before the first run)."""
    return RunLog(lake).rows(TASK_ROWS)


def runs_overview(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run id, newest first: flow, run date, status, start, end, tasks, rows written and
    quarantined, engine, failed tasks. A run is ``failed`` while a task's latest attempt in it failed (a retry
    that completes the task makes it ``completed``)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    out = []
    for run_id, mine in by_run.items():
        latest: dict[str, dict[str, Any]] = {}
        for r in sorted(mine, key=lambda r: r["started_at"]):
            latest[r["task"]] = r
        failed = sorted(t for t, r in latest.items() if r["status"] == "failed")
        ends = [r["started_at"] + _seconds(r["duration_s"]) for r in mine]
        out.append({
            "run_id": run_id, "flow": mine[0]["flow"], "run_date": mine[0]["run_date"],
            "status": "failed" if failed else "completed", "failed_tasks": failed,
            "started_at": min(r["started_at"] for r in mine), "ended_at": max(ends), "tasks": len(latest),
            "rows_written": sum(r["rows_out"] or 0 for r in latest.values() if r["status"] == "completed"),
            "rows_quarantined": sum(r["rows_quarantined"] or 0 for r in latest.values()
                                    if r["status"] == "completed"),
            "engine": mine[-1]["engine"],
        })
    return sorted(out, key=lambda r: r["started_at"], reverse=True)


def freshness(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table, its latest completed write in the ledger: run id, run date, version, rows, when it ended."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] != "completed" or r["version_written"] is None or r["table"] is None:
            continue
        ended = r["started_at"] + _seconds(r["duration_s"])
        if r["table"] not in out or ended >= out[r["table"]]["ended_at"]:
            out[r["table"]] = {"run_id": r["run_id"], "run_date": r["run_date"], "version": r["version_written"],
                               "rows_out": r["rows_out"], "ended_at": ended}
    return out


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)
