"""A table's contract (contracts/contract.py) as Narwhals expressions, evaluated in one aggregation on every engine.

Pandera cannot validate Spark frames, and on Polars it runs one query per check. Both engines therefore
evaluate the declarations compiled here in one pass: per check, the number of rows that break it. When a check
fails, the laptop engine also runs pandera itself (``Contract.pandera()``) for its full report of failure cases;
Spark reports the counts. ``tests/test_contracts.py`` proves the counts equal pandera's for every check kind on
every engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import narwhals as nw

from lakehouse.contracts.contract import Check, Contract

if TYPE_CHECKING:
    import pyarrow as pa


class UnsupportedCheckError(ValueError):
    """A contract uses a check this compiler does not translate (add it to ``_predicate``)."""


@dataclass(frozen=True)
class CompiledCheck:
    column: str | None  # None for table-level checks (composite uniqueness)
    check: str
    violations: nw.Expr  # aggregates to the number of violating rows


def compile_schema(schema: Contract) -> list[CompiledCheck]:
    """Every column's nullability, uniqueness and value checks, plus the table's composite uniqueness."""
    compiled: list[CompiledCheck] = []
    for name, column in schema.columns.items():
        col = nw.col(name)
        if not column.nullable:
            compiled.append(CompiledCheck(name, "not_nullable", col.is_null().cast(nw.Int64).sum()))
        if column.unique:
            compiled.append(CompiledCheck(name, "unique", nw.len() - col.n_unique()))
        for check in column.checks:
            ok = _predicate(col, check, where=f"{schema.name}.{name}")
            compiled.append(CompiledCheck(name, check.name, (~ok & ~col.is_null()).cast(nw.Int64).sum()))
    unique = list(schema.unique or ())
    if unique:
        joined = nw.concat_str([nw.col(c).cast(nw.String).fill_null("\x00") for c in unique], separator="\x1f")
        compiled.append(CompiledCheck(None, f"unique({', '.join(unique)})", nw.len() - joined.n_unique()))
    return compiled


def count_violations(frame: nw.LazyFrame, schema: Contract, *, to_arrow: Callable[[nw.LazyFrame], pa.Table] | None = None,
                     ) -> tuple[int, list[tuple[str | None, str, int]]]:
    """The row count of ``frame`` and ``(column, check, violating rows)`` for every check that fails, in one pass
    (run by ``to_arrow``, the engine's, when given)."""
    compiled = compile_schema(schema)
    exprs = [nw.len().alias("_rows"), *(c.violations.alias(f"_c{i}") for i, c in enumerate(compiled))]
    query = frame.select(*exprs)
    rows, *counts = (to_arrow(query) if to_arrow else query.collect().to_arrow()).to_pylist()[0].values()
    return int(rows), [(c.column, c.check, int(n)) for c, n in zip(compiled, counts, strict=True) if n]


def _predicate(col: nw.Expr, check: Check, *, where: str) -> nw.Expr:
    stats = check.statistics or {}
    match check.name:
        case "isin":
            return col.is_in(list(stats["allowed_values"]))
        case "greater_than":
            return col > stats["min_value"]
        case "greater_than_or_equal_to":
            return col >= stats["min_value"]
        case "less_than":
            return col < stats["max_value"]
        case "less_than_or_equal_to":
            return col <= stats["max_value"]
        case "in_range":
            lo = col >= stats["min_value"] if stats.get("include_min", True) else col > stats["min_value"]
            hi = col <= stats["max_value"] if stats.get("include_max", True) else col < stats["max_value"]
            return lo & hi
        case "str_matches":
            pattern = stats["pattern"]
            return col.str.contains(pattern if pattern.startswith("^") else f"^(?:{pattern})")
    msg = (f"expected a check among isin, greater_than(_or_equal_to), less_than(_or_equal_to), in_range, "
           f"str_matches in {where}, got {check.name!r}; add it to contracts/checks.py")
    raise UnsupportedCheckError(msg)
