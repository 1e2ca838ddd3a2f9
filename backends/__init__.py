"""Engines behind one protocol. ``get_backend`` imports each engine inside its own branch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakehouse.backends.lake import Lake
from lakehouse.backends.protocol import (
    ContractViolation,
    Engine,
    EngineError,
    Gap,
    LandingRead,
    TableNotFoundError,
    WriteResult,
)

if TYPE_CHECKING:
    from lakehouse.deployments.settings import SparkSettings

BACKENDS: tuple[str, ...] = ("polars", "spark")

__all__ = ["BACKENDS", "ContractViolation", "Engine", "EngineError", "Gap", "Lake", "LandingRead", "TableNotFoundError", "WriteResult", "get_backend"]


def get_backend(name: str, lake: Lake, spark: SparkSettings | None = None) -> Engine:
    """The engine called ``name`` over ``lake``; a clear error lists the engines there are.

    ``spark`` says how the Spark engine reaches Spark (default: an embedded Sail server).
    """
    if name == "polars":
        from lakehouse.backends.polars.engine import PolarsDeltaEngine

        return PolarsDeltaEngine(lake)
    if name == "spark":
        from lakehouse.backends.spark.engine import SparkDeltaEngine
        from lakehouse.backends.spark.session import session_for
        from lakehouse.deployments.settings import SparkSettings

        session, kind = session_for(spark or SparkSettings())
        return SparkDeltaEngine(lake, session, kind)
    msg = f"expected a backend among {list(BACKENDS)}, got {name!r}; use --backend polars or --backend spark"
    raise EngineError(msg)
