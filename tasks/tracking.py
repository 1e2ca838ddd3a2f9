"""What every data task leaves behind: a row in the run ledger and OpenLineage run events.

``lake_task`` makes a Prefect task of a task body that takes a ``RunContext`` first and returns a summary dict
(``stage``, ``table``, ``rows_in``, ``rows_written``, ``quarantined``, ``version``, ...). Around each run it:

* emits an OpenLineage ``START`` event, then ``COMPLETE`` or ``FAIL``, with the tables it read (at the versions
  it read) and the table it wrote as datasets, their schema facets and the rows written
  (``outputStatistics``). Events go to the transport of ``settings.lineage``: JSON lines in the lake by default
  (``<lake>/_lineage/<run date>.jsonl``; on S3 one object per stage under ``_lineage/<run date>/``), a
  Marquez-compatible HTTP endpoint, or nowhere;
* adds a row to the run ledger ``<lake>/_ledger/runs`` (run id, flow, task, table, versions read and written,
  rows in, out and quarantined, status, start, duration, engine). Rows are kept in memory and appended in one
  Delta commit when the stage ends (``recorded``), so the ledger costs one commit per stage, not per task.

A task that Prefect finds cached (a retry that resumes) does not run, so it adds nothing: the ledger keeps the
row of the run that computed it.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prefect import task

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import lake_log
from lakehouse.backends.run_log import TASK_ROWS
from lakehouse.contracts.catalog import table
from lakehouse.tasks.caching import keyed_by
from lakehouse.tasks.context import RunContext
from lakehouse.tasks.lineage import LakeObjectTransport, Lineage, TaskRun, output_table

_PENDING: dict[str, list[dict[str, Any]]] = {}  # ledger rows not yet appended, by lake root


_PENDING_LOCK = threading.Lock()


def lake_task(reads: Callable[[dict[str, Any]], Iterable[str]], *, rules: bool = False, **options: Any
              ) -> Callable[[Callable], Any]:
    """A Prefect task (``options`` as for ``@task``) whose result is cached under the versions of the tables
    ``reads(parameters)`` names (and, with ``rules``, the rules' code version: tasks/caching.py), and which
    records itself in the ledger and lineage."""

    def decorate(fn: Callable[..., Any]) -> Any:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            params = signature.bind(*args, **kwargs)
            params.apply_defaults()
            ctx: RunContext = params.arguments["ctx"]
            names = sorted(set(reads(params.arguments)))
            template = options.get("task_run_name")  # the name Prefect gives the run, also when run bare
            name = template.format(**params.arguments) if template else options.get("name", fn.__name__)
            return noted(_tracked(ctx, fn, args, kwargs, names, fallback_name=name))

        return task(cache_key_fn=keyed_by(reads, rules=rules), **options)(run)

    return decorate


def noted(summary: Any) -> Any:
    """Inside a Prefect task run, a summary that refused files or quarantined rows as a Completed state named
    ``Refused`` or ``Quarantined`` with a one-line message (the UI shows it, not a plain green Completed); the
    summary itself otherwise (and always when the task body runs bare)."""
    from prefect.context import TaskRunContext

    if not isinstance(summary, dict) or TaskRunContext.get() is None:
        return summary
    refused, quarantined = summary.get("refused") or [], summary.get("quarantined") or 0
    if not refused and not quarantined:
        return summary
    from prefect.states import Completed

    rules = summary.get("rules") or {}
    top = ", ".join(f"{r} {n:,}" for r, n in sorted(rules.items(), key=lambda x: -x[1])[:3]) if isinstance(
        rules, dict) else ""
    parts = [f"{len(refused)} landing file(s) refused: {', '.join(refused[:3])}"] if refused else []
    if quarantined:
        parts.append(f"{quarantined:,} row(s) quarantined" + (f" ({top})" if top else ""))
    return Completed(data=summary, name="Refused" if refused else "Quarantined",
                     message=f"{summary.get('table', '')}: " + "; ".join(parts))


def _tracked(ctx: RunContext, fn: Callable[..., Any], args: tuple, kwargs: dict, reads: list[str], *,
             fallback_name: str) -> Any:
    settings = ctx.settings()
    lake = Lake(settings.lake_root)
    read_versions = {n: (None if n.startswith("landing:") else lake.version(table(n))) for n in reads}
    who = TaskRun.current(fallback_name, ctx)
    lineage = Lineage.for_settings(settings, ctx)
    started = datetime.now(UTC)
    lineage.emit("START", who, started, read_versions, None)
    try:
        summary = fn(*args, **kwargs)
    except BaseException as exc:
        ended = datetime.now(UTC)
        lineage.emit("FAIL", who, ended, read_versions, None, error=exc)
        _record(ctx, who, read_versions, None, "failed", started, ended,
                error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    ended = datetime.now(UTC)
    summary_dict = summary if isinstance(summary, dict) else None
    lineage.emit("COMPLETE", who, ended, read_versions, summary_dict)
    _record(ctx, who, read_versions, summary_dict, "completed", started, ended)
    return summary


def _record(ctx: RunContext, who: TaskRun, read_versions: dict[str, int | None], summary: dict[str, Any] | None,
            status: str, started: datetime, ended: datetime, *, error: str | None = None) -> None:
    s = summary or {}
    written = output_table(summary)
    row = {
        "run_id": ctx.run_id, "flow": who.flow, "task": who.name, "task_run_id": who.task_run_id,
        "table": written or s.get("table"), "run_date": ctx.run_date,
        "versions_read": json.dumps(read_versions, sort_keys=True),
        "version_written": s.get("version") if written else None,
        "rows_in": s.get("rows_in"), "rows_out": s.get("rows_written"), "rows_quarantined": s.get("quarantined"),
        "status": status, "error": error, "started_at": started, "duration_s": (ended - started).total_seconds(),
        "engine": ctx.settings().backend, "level": TASK_ROWS,
    }
    with _PENDING_LOCK:
        _PENDING.setdefault(ctx.lake().root, []).append(row)


def flush_ledger(ctx: RunContext) -> int:
    """Append the ledger rows this process holds for ``ctx``'s lake in one commit (and, on an object store, write
    the lineage events held); how many rows."""
    lake = ctx.lake()
    if not lake.is_local:
        LakeObjectTransport.flush(lake)
    with _PENDING_LOCK:
        rows = _PENDING.pop(lake.root, [])
    if rows:
        lake_log(lake, "ledger").append(rows)
    return len(rows)


@contextmanager
def recorded(ctx: RunContext) -> Iterator[None]:
    """A stage: its tasks' ledger rows are appended when it ends, whether it succeeded or failed."""
    try:
        yield
    finally:
        flush_ledger(ctx)
