"""Shape a frame to a catalog table: its columns, in declared order, with declared types."""

from __future__ import annotations

import narwhals as nw

from lakehouse.contracts.catalog import TableSpec


def to_schema(frame: nw.LazyFrame, spec: TableSpec) -> nw.LazyFrame:
    """Select ``spec``'s columns in order, cast to its types; a missing column is an error naming it."""
    have = set(frame.collect_schema().names())
    missing = [c for c in spec.columns if c not in have]
    if missing:
        msg = f"expected columns {missing} for table {spec.name!r}, got only {sorted(have)}; fix the transform"
        raise ValueError(msg)
    return frame.select([nw.col(n).cast(t) for n, t in spec.narwhals_schema.items()])
