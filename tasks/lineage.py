"""OpenLineage run events of every data task (``tasks/tracking.py`` emits them): ``START``, then ``COMPLETE`` or
``FAIL``, with the tables read (at the versions read) and the table written as datasets, their schema facets and
the rows written (``outputStatistics``). Events go to the transport of ``settings.lineage``: JSON lines in the lake
by default (``<lake>/_lineage/<run date>.jsonl``; on S3 one object per stage under ``_lineage/<run date>/``), a
Marquez-compatible HTTP endpoint, or nowhere."""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from lakehouse.backends.lake import Lake
from lakehouse.backends.storage import S3Path, root_path
from lakehouse.contracts.catalog import table
from lakehouse.contracts.logs import LINEAGE
from lakehouse.tasks.context import RunContext

PRODUCER = "https://github.com/project-a/lakehouse"


@dataclass(frozen=True)
class TaskRun:
    """Who is running: the Prefect task run (or a fresh id outside Prefect) and its flow run."""

    task_run_id: str
    name: str
    flow: str
    flow_run_id: str | None

    @classmethod
    def current(cls, fallback_name: str, ctx: RunContext) -> TaskRun:
        from prefect.context import FlowRunContext, TaskRunContext

        task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
        flow_run = flow_ctx.flow_run if flow_ctx is not None else None
        name = fallback_name
        if task_ctx is not None:  # a run name from a template is stable (bronze-crm.accounts); a default one is not
            name = task_ctx.task_run.name if task_ctx.task.task_run_name else task_ctx.task.name
        return cls(
            task_run_id=str(task_ctx.task_run.id) if task_ctx is not None else str(uuid.uuid4()),
            name=name,
            flow=ctx.flow,
            flow_run_id=str(flow_run.id) if flow_run is not None else None,
        )


# ------------------------------------------------------------------------------------------- lineage
class Lineage:
    """OpenLineage events of this process's tasks for one lake and run date, through the configured transport."""

    _clients: ClassVar[dict[tuple[Any, ...], Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, client: Any, settings: Any, ctx: RunContext) -> None:
        self.client, self.settings, self.ctx = client, settings, ctx

    @classmethod
    def for_settings(cls, settings: Any, ctx: RunContext) -> Lineage:
        conf = settings.lineage
        key = (conf.transport, conf.url, conf.endpoint, conf.timeout_seconds, conf.retries, Lake(settings.lake_root).root, ctx.run_date)
        with cls._lock:
            client = cls._clients.get(key)
            if client is None and conf.transport != "none":
                client = cls._clients[key] = _client(conf, Lake(settings.lake_root), ctx)
        return cls(client, settings, ctx)

    def emit(self, state: str, who: TaskRun, at: datetime, read_versions: dict[str, int | None],
             summary: dict[str, Any] | None, *, error: BaseException | None = None) -> None:
        if self.client is None:
            return
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import (
            error_message_run,
            output_statistics_output_dataset,
            parent_run,
        )

        run_facets: dict[str, Any] = {}
        if who.flow_run_id:
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=who.flow_run_id),
                job=parent_run.Job(namespace=self.settings.lineage.namespace, name=who.flow))
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{type(error).__name__}: {error}"[:2000], programmingLanguage="python",
                stackTrace="".join(traceback.format_exception(error))[-8000:])
        inputs = [InputDataset(namespace=ns, name=name, facets=facets)
                  for ns, name, facets in (self._dataset(n, read_versions.get(n)) for n in read_versions)]
        outputs = []
        written = output_table(summary)
        if written is not None and summary is not None:
            ns, name, facets = self._dataset(written, summary.get("version"))
            stats = {}
            if summary.get("rows_written") is not None:
                stats["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=int(summary["rows_written"]))
            outputs.append(OutputDataset(namespace=ns, name=name, facets=facets, outputFacets=stats))
        event = RunEvent(
            eventType=getattr(RunState, state), eventTime=at.isoformat(), producer=PRODUCER,
            run=Run(runId=who.task_run_id, facets=run_facets),
            job=Job(namespace=self.settings.lineage.namespace, name=f"{who.flow}.{who.name}"),
            inputs=inputs, outputs=outputs)
        try:
            self.client.emit(event)
        except Exception as exc:  # noqa: BLE001 - lineage observes: a receiver that is down must not fail the task
            import logging

            logging.getLogger(__name__).warning("lineage event %s of %s not delivered: %s", state, who.name, exc)

    def _dataset(self, name: str, version: int | None) -> tuple[str, str, dict[str, Any]]:
        """(namespace, name, facets) of a table or landing entity, OpenLineage's naming: ``file`` + absolute path
        for local data, ``s3://bucket`` + key for S3."""
        from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

        if name.startswith("landing:"):
            from lakehouse.contracts.landing import landing_entity

            entity = landing_entity(name.removeprefix("landing:"))
            folder = root_path(self.settings.landing_root) / entity.source / entity.entity
            if isinstance(folder, S3Path):
                return f"s3://{folder.bucket}", folder.key, {}
            return "file", str(folder), {}
        spec = table(name)
        uri = Lake(self.settings.lake_root).uri(spec)
        if "://" in uri and not uri.startswith("file://"):
            scheme, _, rest = uri.partition("://")
            bucket, _, key = rest.partition("/")
            namespace, path = f"{scheme}://{bucket}", key
        else:
            namespace, path = "file", str(Path(uri.removeprefix("file://")).resolve())
        facets: dict[str, Any] = {"schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type)) for f in spec.arrow_schema])}
        if version is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version))
        return namespace, path, facets


def _client(conf: Any, lake: Any, ctx: RunContext) -> Any:
    from openlineage.client import OpenLineageClient

    if conf.transport == "http":
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        retry = {"total": conf.retries, "read": conf.retries, "connect": conf.retries, "backoff_factor": 0.5,
                 "status_forcelist": [429, 500, 502, 503, 504], "allowed_methods": ["POST"]}
        return OpenLineageClient(transport=HttpTransport(HttpConfig(
            url=conf.url, endpoint=conf.endpoint, timeout=conf.timeout_seconds, retry=retry)))
    from openlineage.client.transport.file import FileConfig, FileTransport

    if lake.is_local:
        folder = lake.local_root / LINEAGE
        folder.mkdir(parents=True, exist_ok=True)
        return OpenLineageClient(transport=FileTransport(FileConfig(
            log_file_path=str(folder / f"{ctx.run_date.isoformat()}.jsonl"), append=True)))
    # Object stores cannot append: events are kept and written as one JSON-lines object per stage (flush_ledger).
    return OpenLineageClient(transport=LakeObjectTransport(lake, ctx.run_date))


def output_table(summary: dict[str, Any] | None) -> str | None:
    """The catalog table a task's summary says it wrote (None: a task that writes no table)."""
    name = (summary or {}).get("table")
    try:
        return table(name).name if name else None
    except KeyError:
        return None


_EVENTS_LOCK = threading.Lock()


class LakeObjectTransport:
    """An OpenLineage transport for a lake on an object store: events are held in memory and written, in order,
    as one JSON-lines object ``_lineage/<run date>/<time>-<id>.jsonl`` when the stage ends."""

    kind = "lake-object"
    _pending: ClassVar[dict[str, list[str]]] = {}  # serialised events by lake root

    def __init__(self, lake: Any, run_date: Any) -> None:
        self.lake, self.run_date = lake, run_date

    def emit(self, event: Any) -> None:
        from openlineage.client.serde import Serde

        with _EVENTS_LOCK:
            LakeObjectTransport._pending.setdefault(self.lake.root, []).append(
                f"{self.run_date.isoformat()}\t{Serde.to_json(event)}")

    def close(self, timeout: float = -1) -> bool:
        return True

    @classmethod
    def flush(cls, lake: Any) -> int:
        with _EVENTS_LOCK:
            held = cls._pending.pop(lake.root, [])
        by_date: dict[str, list[str]] = {}
        for line in held:
            day, _, event = line.partition("\t")
            by_date.setdefault(day, []).append(event)
        for day, events in by_date.items():
            name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
            lake.write_bytes(f"{LINEAGE}/{day}/{name}", ("\n".join(events) + "\n").encode())
        return len(held)


def lineage_events(lake: Any) -> list[dict[str, Any]]:
    """Every lineage event the file transport wrote to the lake (local or object store), in order."""
    events = []
    for path in lake.list_files(LINEAGE):
        if path.endswith(".jsonl"):
            text = lake.read_bytes(path).decode()
            events += [json.loads(line) for line in text.splitlines() if line.strip()]
    return events
