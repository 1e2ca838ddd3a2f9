"""Arrow data as Python values, without pandas.

pyarrow imports pandas (half a second) the first time it turns Arrow values into Python objects or Python
objects into Arrow, whenever pandas is installed (the Spark extra installs it): ``pa.array`` of a list,
``pa.scalar``, a Python value passed to a compute function, even ``schema.empty_table()``. The laptop path never
needs pandas, so the lake's own logs, the landing decoder's arrays and the small results the tasks read back go
through Polars or these helpers, which do not (tests/test_imports.py runs a day and checks).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa


def from_stream(data: Any) -> pa.Table:
    """An object exporting an Arrow stream (delta-rs's add actions, arro3 tables) as a pyarrow table
    (``pa.table(data)`` imports pandas)."""
    return pa.RecordBatchReader.from_stream(data).read_all()


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` without rows (``schema.empty_table()`` imports pandas)."""
    return pa.Table.from_batches([], schema=schema)


def scalar(value: Any) -> pa.Scalar:
    """A Python value (int, float, bool, str) as an Arrow scalar for a compute function's argument (a Python
    value there is converted by way of pandas)."""
    return pl.Series([value]).to_arrow()[0]


def text_array(values: list[str | None]) -> pa.LargeStringArray:
    """``values`` as an Arrow text array (``large_string``; None is null), built by Polars, as fast as
    ``pa.array`` once pandas is imported and without importing it."""
    return pl.Series(values, dtype=pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())  # type: ignore[return-value]


def int_array(values: list[int]) -> pa.Int64Array:
    """``values`` as an Arrow int64 array, without importing pandas."""
    return pl.Series(values, dtype=pl.Int64).to_arrow()  # type: ignore[return-value]


def arrow_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """``rows`` (dicts; a missing key is null) as an Arrow table of ``schema``."""
    empty = pl.from_arrow(empty_table(schema))
    try:
        frame = pl.DataFrame(rows, schema=empty.schema)  # type: ignore[union-attr]
    except pl.exceptions.PolarsError as exc:
        fields = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise TypeError(f"expected rows with values of ({fields}); {exc}") from None
    return frame.to_arrow().cast(schema)

