"""Comparing lake tables across runs and engines.

Tables are compared after normalising column types (Arrow large/small strings, integer widths) and row order:
keys, counts, strings, dates, timestamps and booleans exactly; doubles within 1e-9 relative or half a cent
absolute (money marts are rounded to cents, so one ULP of difference in a sum can move a rounded cent).
Columns that name the run (run ids, ingest time) differ by construction and are left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from lakehouse.contracts.catalog import TABLES, table

RUN_COLUMNS = {"_run_id", "_ingested_at", "run_id"}
REL_TOL, ABS_TOL = 1e-9, 0.005


def normalised(root: Path, name: str) -> pl.DataFrame | None:
    path = root / TABLES[name].path
    if not (path / "_delta_log").is_dir():
        return None
    return normalise(DeltaTable(str(path)).to_pyarrow_table(), name)


def normalise(data: pa.Table, name: str) -> pl.DataFrame:
    """Rows of table ``name`` (Arrow, as read or computed) in the comparable form: run columns left out,
    integers as Int64, sorted by every column."""
    df = pl.from_arrow(data)
    assert isinstance(df, pl.DataFrame)
    keep = [c for c in table(name).columns if c not in RUN_COLUMNS]
    casts = {c: pl.Int64 for c, t in df.schema.items() if t.is_integer()}
    df = df.select(keep).cast(casts)  # type: ignore[arg-type]
    return df.sort(by=keep, nulls_last=True)


def assert_same_rows(name: str, left: pl.DataFrame, right: pl.DataFrame) -> None:
    assert left.columns == right.columns, name
    assert left.height == right.height, f"{name}: {left.height} rows on polars, {right.height} on spark"
    floats = [c for c, t in left.schema.items() if t.is_float()]
    exact = [c for c in left.columns if c not in floats]
    assert left.select(exact).equals(right.select(exact)), f"{name}: non-float columns differ"
    for col in floats:
        for a, b in zip(left.get_column(col).to_list(), right.get_column(col).to_list(), strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL), (name, col, a, b)


def clean_up_log(table_path: Path) -> int:
    """What delta-rs' expired-log cleanup leaves of a table's log (a lake idle past the log retention): a
    checkpoint at the latest version, and the commits before it gone. Returns that version."""
    dt = DeltaTable(str(table_path))
    latest = dt.version()
    dt.create_checkpoint()
    for v in range(latest):
        (table_path / "_delta_log" / f"{v:020d}.json").unlink()
    return latest
