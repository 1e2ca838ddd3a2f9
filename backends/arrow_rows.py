"""Arrow data as Python values, without pandas.

pyarrow imports pandas (half a second) the first time it turns Arrow values into Python objects or Python
objects into Arrow, whenever pandas is installed (the Spark extra installs it). The laptop path never needs
pandas, so the lake's own logs and the small results the tasks read back go through Polars, which does not.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa


def python_rows(data: pa.Table) -> list[dict[str, Any]]:
    """Every row of ``data`` as a dict of Python values."""
    return pl.from_arrow(data).to_dicts()  # type: ignore[union-attr]


def arrow_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """``rows`` (dicts; a missing key is null) as an Arrow table of ``schema``."""
    empty = pl.from_arrow(schema.empty_table())
    try:
        frame = pl.DataFrame(rows, schema=empty.schema)  # type: ignore[union-attr]
    except pl.exceptions.PolarsError as exc:
        fields = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise TypeError(f"expected rows with values of ({fields}); {exc}") from None
    return frame.to_arrow().cast(schema)

