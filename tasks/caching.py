"""Retries that resume: task results persisted to result storage, under cache keys made of what a task read.

Every data task of the daily flow persists its small summary to the result storage of the settings
(``result_storage``: a folder or ``s3://bucket/prefix``; by default ``<lake_root>/_results``). Its cache key is
built from the task and its arguments, the lake, the run date, the flow run, and the Delta version of every
table the task reads (landing files' names, sizes and times for bronze). When a failed flow run is retried
(from the Prefect UI, ``prefect flow-run retry``, or a flow's own ``retries``), a task whose inputs are
unchanged finds its result under the same key and is not run again (state ``Cached``); the task that failed,
and everything after it, runs. A new flow run of the same date recomputes from the lake (its key differs by
the flow run); ``force`` refreshes every key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from prefect.context import TaskRunContext

from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import table
from lakehouse.contracts.logs import RESULTS
from lakehouse.tasks.context import RunContext

T = TypeVar("T")


def result_storage(ctx: RunContext) -> Path | str:
    """Where task results are kept for ``ctx``'s settings: a local folder, or (for ``s3://``) the slug of an
    ``S3Bucket`` block saved for the environment (credentials from the standard AWS chain)."""
    settings = ctx.settings()
    where = settings.result_storage or Lake(settings.lake_root).path_uri(RESULTS)
    if where.startswith("s3://"):
        from prefect.settings import PREFECT_API_URL

        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        return _saved_results_block(f"lakehouse-results-{settings.env}", bucket, prefix.strip("/"),
                                    PREFECT_API_URL.value())
    return Path(where.removeprefix("file://")).resolve()


@functools.cache
def _saved_results_block(name: str, bucket: str, folder: str, api_url: str | None) -> str:
    """The slug of the ``S3Bucket`` block ``name`` for ``bucket``/``folder``, saved once per process and Prefect
    API (a block's save builds its JSON schema: about 2 s of CPU, which every task paid when this ran per task)."""
    from prefect_aws import AwsCredentials, S3Bucket

    del api_url  # part of the cache key only: another API has its own blocks
    S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=AwsCredentials()).save(name, overwrite=True)
    return f"s3-bucket/{name}"


def resumable(task: T, ctx: RunContext) -> T:
    """``task`` persisting its result to ``ctx``'s result storage; with ``ctx.force``, recomputing. Called, it
    returns the task's summary also when the task ended in a named Completed state (tasks/tracking.py
    ``noted``: Refused, Quarantined)."""
    configured = _configured(task, result_storage(ctx), ctx.force or None)

    @functools.wraps(configured.fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return summary_of_state(configured(*args, **kwargs))

    return call  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def _configured(task: T, storage: Path | str, refresh_cache: bool | None) -> T:
    """``task`` with its result storage, made once per process and storage (Prefect's ``with_options`` reads the
    task's source again: 0.28 s of a day's 30 task calls under cProfile)."""
    return task.with_options(result_storage=storage, persist_result=True,  # type: ignore[attr-defined]
                             refresh_cache=refresh_cache)


def summary_of_state(value: Any) -> Any:
    """A task call's value: the summary inside a state the task returned, or the value itself."""
    from prefect.states import State

    return value.result() if isinstance(value, State) else value


# The modules whose code decides how a bronze row is conformed into silver or quarantined (rules, parsing,
# currencies), and the libraries whose data they use.
CONFORM_CODE = ("contracts/rules.py", "contracts/landing.py", "contracts/catalog.py", "contracts/expressions.py",
                "tasks/transforms/silver.py", "backends/expressions.py", "backends/polars/expressions.py",
                "backends/spark/expressions.py")
CONFORM_LIBRARIES = ("iso4217",)


@functools.cache
def conform_code_version() -> str:
    """A digest of the code and library versions that decide silver's rules: a fix to a rule changes it, so a
    retried task or a rerun date conforms its batch again (``CONFORM_CODE``)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for relative in CONFORM_CODE:
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    for library in CONFORM_LIBRARIES:
        digest.update(f"{library}=={metadata.version(library)}".encode())
    return digest.hexdigest()


def keyed_by(reads: Callable[[dict[str, Any]], Iterable[str]], *, rules: bool = False
             ) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn``: ``reads(parameters)`` names the tables the task reads (``landing:`` entries
    name landing entities, fingerprinted by their files for the run date); with ``rules``, the key also holds
    the rules' code version (``conform_code_version``), so a fixed rule runs the task again in a retry."""

    def key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        ctx: RunContext = parameters["ctx"]
        lake = ctx.lake()
        versions = {}
        for name in sorted(set(reads(parameters))):
            if name.startswith("landing:"):
                versions[name] = _landing_fingerprint(ctx, name.removeprefix("landing:"))
            else:
                versions[name] = lake.version(table(name))
        settings = ctx.settings()
        args = {k: v for k, v in parameters.items() if k != "ctx"}
        material = {
            "task": context.task.name, "args": args, "run_date": ctx.run_date, "run_id": ctx.run_id,
            "lake": Lake(settings.lake_root).path_uri(""), "backend": settings.backend, "versions": versions,
            "rules": conform_code_version() if rules else None,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    return key


def _landing_fingerprint(ctx: RunContext, entity_name: str) -> list[tuple[str, int, int]]:
    from lakehouse.contracts.landing import landing_entity

    entity = landing_entity(entity_name)
    folder = entity.folder(ctx.landing_dir(), ctx.run_date)
    if not folder.is_dir():
        return []
    # Every entry, whatever its name: a renamed, replaced or refused file changes what the run does.
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir(), key=lambda p: p.name)]
