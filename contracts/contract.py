"""A table's contract, declared as plain data: column types, nullability, uniqueness and value checks.

The declarations use pandera's vocabulary (``Check.isin``, ``Check.in_range``, ``Check.str_matches``, ...) but
import nothing heavy: every write checks a contract in one Narwhals pass on either engine (contracts/checks.py),
and pandera itself, which pulls in pandas, is imported only when a check fails and its full report of failure
cases is wanted (``Contract.pandera()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lakehouse.contracts.types import DType

if TYPE_CHECKING:
    import pandera.polars as pandera_polars
    import polars as pl


@dataclass(frozen=True)
class Check:
    """One value check of a column, named as pandera names it (``statistics`` are pandera's too)."""

    name: str
    statistics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def isin(cls, values: Any) -> Check:
        return cls("isin", {"allowed_values": list(values)})

    @classmethod
    def gt(cls, value: Any) -> Check:
        return cls("greater_than", {"min_value": value})

    @classmethod
    def ge(cls, value: Any) -> Check:
        return cls("greater_than_or_equal_to", {"min_value": value})

    @classmethod
    def lt(cls, value: Any) -> Check:
        return cls("less_than", {"max_value": value})

    @classmethod
    def le(cls, value: Any) -> Check:
        return cls("less_than_or_equal_to", {"max_value": value})

    @classmethod
    def in_range(cls, low: Any, high: Any) -> Check:
        return cls("in_range", {"min_value": low, "max_value": high, "include_min": True, "include_max": True})

    @classmethod
    def str_matches(cls, pattern: str) -> Check:
        return cls("str_matches", {"pattern": pattern})

    def pandera(self) -> Any:
        """The same check as a pandera ``Check``."""
        import pandera.polars as pa

        s = self.statistics
        match self.name:
            case "isin":
                return pa.Check.isin(s["allowed_values"])
            case "greater_than":
                return pa.Check.gt(s["min_value"])
            case "greater_than_or_equal_to":
                return pa.Check.ge(s["min_value"])
            case "less_than":
                return pa.Check.lt(s["max_value"])
            case "less_than_or_equal_to":
                return pa.Check.le(s["max_value"])
            case "in_range":
                return pa.Check.in_range(s["min_value"], s["max_value"], s["include_min"], s["include_max"])
            case "str_matches":
                return pa.Check.str_matches(s["pattern"])
        return getattr(pa.Check, self.name)(**s)


@dataclass(frozen=True)
class Column:
    """A column's declared type (contracts/types.py), whether it may be null, whether it is unique, its checks."""

    dtype: DType
    checks: tuple[Check, ...] = ()
    nullable: bool = True
    unique: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DType):
            msg = (f"expected a column type of contracts/types.py (STRING, INT64, FLOAT64, DATE, BOOL, UTC_TS, "
                   f"list_of(...)), got {self.dtype!r}")
            raise TypeError(msg)


def required(dtype: DType, *checks: Check, unique: bool = False) -> Column:
    """A column that is never null."""
    return Column(dtype, checks, nullable=False, unique=unique)


def optional(dtype: DType, *checks: Check) -> Column:
    """A column that may be null (its checks judge the values that are not)."""
    return Column(dtype, checks, nullable=True)


@dataclass(frozen=True, eq=False)
class Contract:
    """A table's columns (every one, no other: a frame with more or fewer breaks it) and the column sets that
    are unique together."""

    name: str
    columns: dict[str, Column]
    unique: tuple[str, ...] = ()

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {n: c.dtype.polars() for n, c in self.columns.items()}

    @cached_property
    def _pandera(self) -> pandera_polars.DataFrameSchema:
        import pandera.polars as pa

        return pa.DataFrameSchema(
            {n: pa.Column(c.dtype.polars(), [k.pandera() for k in c.checks], nullable=c.nullable, unique=c.unique)
             for n, c in self.columns.items()},
            name=self.name, unique=list(self.unique) or None, strict=True, ordered=False)

    def pandera(self) -> pandera_polars.DataFrameSchema:
        """The same contract as a pandera schema (imports pandera: for its full report of failure cases)."""
        return self._pandera
