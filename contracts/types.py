"""Column types, declared once for every engine without importing one.

The catalog's tables and the lake's logs name their columns' types here; each engine asks a type for its own
object (``polars()``, ``narwhals()``, ``arrow()``) when it needs one. Declaring them this way keeps Polars,
Narwhals and pyarrow out of the commands that only read the catalog and the logs (``lakehouse tables``,
``status``, ``releases``: tests/test_imports.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TypeName = Literal["string", "float64", "int64", "date", "bool", "timestamp", "list"]


@dataclass(frozen=True)
class DType:
    """One column type: text, 64-bit float or integer, date, boolean, a UTC timestamp in microseconds, or a list
    of ``item``."""

    name: TypeName
    item: DType | None = None

    def __repr__(self) -> str:
        return f"list<{self.item!r}>" if self.item is not None else self.name

    def polars(self) -> Any:
        import polars as pl

        match self.name:
            case "timestamp":
                return pl.Datetime("us", "UTC")
            case "list":
                return pl.List(self._item.polars())
        return {"string": pl.String, "float64": pl.Float64, "int64": pl.Int64, "date": pl.Date,
                "bool": pl.Boolean}[self.name]

    def narwhals(self) -> Any:
        import narwhals as nw

        match self.name:
            case "timestamp":
                return nw.Datetime(time_unit="us", time_zone="UTC")
            case "list":
                return nw.List(self._item.narwhals())
        return {"string": nw.String, "float64": nw.Float64, "int64": nw.Int64, "date": nw.Date,
                "bool": nw.Boolean}[self.name]()

    def arrow(self) -> Any:
        import pyarrow as pa

        match self.name:
            case "timestamp":
                return pa.timestamp("us", tz="UTC")
            case "list":
                return pa.list_(self._item.arrow())
        return {"string": pa.string, "float64": pa.float64, "int64": pa.int64, "date": pa.date32,
                "bool": pa.bool_}[self.name]()

    @property
    def _item(self) -> DType:
        if self.item is None:
            msg = f"expected a list type to have an item type, got {self!r}"
            raise TypeError(msg)
        return self.item


STRING, FLOAT64, INT64, DATE, BOOL = DType("string"), DType("float64"), DType("int64"), DType("date"), DType("bool")
UTC_TS = DType("timestamp")


def list_of(item: DType) -> DType:
    return DType("list", item)
