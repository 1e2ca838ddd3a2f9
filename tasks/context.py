"""What every task of a run needs to find its data: the environment, the run date and run id.

Only names and overrides travel between flow and tasks (never frames, never secrets): each task rebuilds its
settings and engine from them, so a task runs the same in-process, on a worker, or on a cluster driver.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field

from lakehouse.backends import Engine, get_backend
from lakehouse.backends.lake import Lake
from lakehouse.backends.storage import AnyPath, S3Path, UnreachableRootError, check_bucket, root_path
from lakehouse.deployments.settings import Settings, cached_settings


class LandingNotFoundError(FileNotFoundError):
    """The landing folder does not exist."""


class RunContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    env: str = "local"
    run_date: date
    run_id: str
    started_at: datetime
    overrides: dict[str, Any] = Field(default_factory=dict)
    flow: str = "daily-lakehouse"  # the flow the run belongs to (ledger and lineage job names)
    force: bool = False  # recompute every task even if a result for the same inputs is stored (tasks/caching.py)

    def settings(self) -> Settings:
        return cached_settings(self.env, tuple(sorted(self.overrides.items())))

    def lake(self) -> Lake:
        return Lake(self.settings().lake_root)

    def engine(self) -> Engine:
        settings = self.settings()
        return get_backend(settings.backend, self.lake(), settings.spark)

    def landing_dir(self) -> AnyPath:
        return require_landing(self.settings().landing_root)


_ANSWERED: set[str] = set()  # buckets of S3 landing roots that answered in this process


def require_landing(landing_root: str) -> AnyPath:
    """The landing folder (a local folder, resolved, or an ``s3://bucket/prefix``); a clear error, in seconds,
    when the folder does not exist or the bucket cannot be reached."""
    fix = "run 'lakehouse generate --out <folder>' or pass --landing <folder>"
    root = root_path(landing_root)
    if isinstance(root, S3Path):  # a prefix with no object yet is an empty landing root once its bucket answers
        if root.bucket not in _ANSWERED:  # once per process: every task of a run asks for the landing root
            try:
                check_bucket(landing_root, "landing root", "pass --landing or set LAKEHOUSE_LANDING_ROOT")
            except UnreachableRootError as exc:
                raise LandingNotFoundError(str(exc)) from None
            _ANSWERED.add(root.bucket)
        return root
    if not root.is_dir():
        msg = f"expected a landing folder at {str(root)!r}, it does not exist; {fix}"
        raise LandingNotFoundError(msg)
    return root


def summary_of(stage: str, spec: Any, **figures: Any) -> dict[str, Any]:
    """What a task returns: its stage, the table it wrote (``spec.name``) and small figures, never frames."""
    return {"stage": stage, "table": spec.name, **figures}


def in_run() -> bool:
    """Whether a Prefect flow or task run is under way: artifacts belong to one (Prefect deprecates creating them
    outside a run), and a task body run bare (benchmarks, unit tests of a task's ``.fn``) creates none."""
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def logger() -> Any:
    """The Prefect run logger inside a run; this module's logger when a task body runs bare (benchmarks)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)
