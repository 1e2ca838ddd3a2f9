"""Which engines a test runs on, and how a test builds its input frames on each.

- ``polars``: the laptop engine.
- ``sail``: Spark Connect served by Sail (a server process the test session starts on loopback).
- ``jvm``: classic PySpark on a local JVM (``local[2]``, Java 17). It has no Delta (the jars cannot be fetched
  here), so it runs the transform tests only.
"""

from __future__ import annotations

from typing import Any

import narwhals as nw
import polars as pl

TRANSFORM_ENGINES = ["polars", "sail", "jvm"]
DELTA_ENGINES = ["polars", "sail"]

# name -> SparkSession, filled by the session fixtures in conftest.py
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
