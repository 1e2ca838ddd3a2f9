"""Engines behind one protocol. ``get_backend`` imports each engine inside its own branch."""

from __future__ import annotations

from typing import Literal

from backends.lake import Lake
from backends.protocol import (
    ContractViolation,
    Engine,
    EngineError,
    LandingRead,
    TableNotFoundError,
    WriteResult,
)

BackendName = Literal["polars"]
BACKENDS: tuple[str, ...] = ("polars",)

__all__ = ["BACKENDS", "ContractViolation", "Engine", "EngineError", "Lake", "LandingRead", "TableNotFoundError", "WriteResult", "get_backend"]


def get_backend(name: str, lake: Lake) -> Engine:
    """The engine called ``name`` over ``lake``; a clear error lists the engines there are."""
    if name == "polars":
        from backends.polars_delta import PolarsDeltaEngine

        return PolarsDeltaEngine(lake)
    msg = f"expected a backend among {list(BACKENDS)}, got {name!r}; use --backend polars"
    raise EngineError(msg)
