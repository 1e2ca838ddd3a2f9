"""Which engines a test runs on, how it builds its input frames there, and how it reads the result back.

- ``polars``: the laptop engine.
- ``sail``: Spark Connect served by Sail (a server process the test session starts on loopback).
- ``jvm``: classic PySpark on a local JVM (``local[2]``, Java 17). It has no Delta here, so it runs transform
  tests only.

A transform is written once (Narwhals), so a test builds its input as a Polars frame, moves it to the engine
under test with :func:`to_engine`, runs the transform, and compares :func:`rows` of the result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import narwhals as nw
import polars as pl

TRANSFORM_ENGINES = ["polars", "sail", "jvm"]
DELTA_ENGINES = ["polars", "sail"]

# name -> SparkSession, filled by the session fixtures of lakehouse.testing.plugin
SESSIONS: dict[str, Any] = {}


def to_engine(engine: str, frame: pl.LazyFrame | pl.DataFrame) -> nw.LazyFrame:
    """A Polars frame as a Narwhals lazy frame of ``engine``."""
    if engine == "polars":
        return nw.from_native(frame.lazy())
    if engine in SESSIONS:
        from lakehouse.backends.spark.engine import spark_frame

        return nw.from_native(spark_frame(SESSIONS[engine], frame.lazy().collect().to_arrow()))
    msg = f"expected an engine among {TRANSFORM_ENGINES} with its session started, got {engine!r}"
    raise ValueError(msg)


def frame(engine: str, data: Mapping[str, list], schema: Mapping[str, Any] | None = None) -> nw.LazyFrame:
    """A lazy frame of ``data`` (column -> values, Polars ``schema`` if given) on ``engine``."""
    return to_engine(engine, pl.LazyFrame(dict(data), schema=dict(schema) if schema else None))


def rows(frame: nw.LazyFrame | nw.DataFrame, *sort_by: str) -> list[dict[str, Any]]:
    """A frame's rows as dicts, collected through Polars, sorted by ``sort_by`` (default: every column, as
    text), so the same rows compare equal whichever engine computed them."""
    collected = frame.collect(backend="polars") if isinstance(frame, nw.LazyFrame) else frame
    out = collected.to_polars().rows(named=True)
    return sorted(out, key=lambda r: tuple(str(r[c]) for c in (sort_by or r)))


@contextmanager
def handed_over(engine: Any) -> Iterator[list[int]]:
    """While open, the row count of every table an engine of ``engine``'s class hands its caller (``to_arrow``,
    the one way rows reach the driver through an engine), in order: what a test bounds to show the driver never
    holds the data."""
    sizes: list[int] = []
    cls = type(engine)
    original = cls.to_arrow

    def counted(self: Any, frame: nw.LazyFrame) -> Any:
        out = original(self, frame)
        sizes.append(out.num_rows)
        return out

    cls.to_arrow = counted  # type: ignore[method-assign]
    try:
        yield sizes
    finally:
        cls.to_arrow = original  # type: ignore[method-assign]
