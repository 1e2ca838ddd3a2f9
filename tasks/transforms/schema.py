"""Shape a frame to a catalog table: its columns, in declared order, with declared types."""

from __future__ import annotations

import narwhals as nw
import polars as pl

from contracts.catalog import TableSpec

_NW_TYPES = {
    pl.Utf8: nw.String(),
    pl.Float64: nw.Float64(),
    pl.Int64: nw.Int64(),
    pl.Date: nw.Date(),
    pl.Boolean: nw.Boolean(),
}


def narwhals_dtype(dtype: pl.DataType) -> nw.dtypes.DType:
    """The Narwhals type of a catalog column type (catalog types are declared with Polars' dtype objects)."""
    if isinstance(dtype, pl.Datetime):
        return nw.Datetime(time_unit=dtype.time_unit, time_zone=dtype.time_zone)
    for pl_type, nw_type in _NW_TYPES.items():
        if dtype == pl_type:
            return nw_type
    msg = f"expected a catalog column type among {list(_NW_TYPES)} or Datetime, got {dtype!r}"
    raise TypeError(msg)


def to_schema(frame: nw.LazyFrame, spec: TableSpec) -> nw.LazyFrame:
    """Select ``spec``'s columns in order, cast to its types; a missing column is an error naming it."""
    have = set(frame.collect_schema().names())
    missing = [c for c in spec.columns if c not in have]
    if missing:
        msg = f"expected columns {missing} for table {spec.name!r}, got only {sorted(have)}; fix the transform"
        raise ValueError(msg)
    return frame.select([nw.col(n).cast(narwhals_dtype(t)) for n, t in spec.polars_schema.items()])
