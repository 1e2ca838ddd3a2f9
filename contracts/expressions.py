"""Portable Narwhals expressions the declarations and the transforms share: they run unchanged on every
engine (the engine-specific column functions, hashing and timestamp parsing, are in ``backends/expressions.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import narwhals as nw

# Separator between fields when a record is hashed; NUL stands for a missing value.
FIELD_SEP = "\x1f"
NULL_MARK = "\x00"


def record_digest(values: list[str | None]) -> str:
    """SHA-256 of one record's text values, exactly as ``backends.expressions.with_record_hash`` computes it."""
    joined = FIELD_SEP.join(NULL_MARK if v is None else v for v in values)
    return hashlib.sha256(joined.encode()).hexdigest()


def row_text(columns: Iterable[str]) -> nw.Expr:
    """``columns`` as one text value (each cast to text, nulls marked, joined by a separator): two rows of a
    frame have the same text exactly when they have the same values, nulls included (a join on it matches
    nulls, which a join on the columns themselves does not)."""
    return nw.concat_str([nw.col(c).cast(nw.String).fill_null(NULL_MARK) for c in columns], separator=FIELD_SEP)


def ratio(numerator: nw.Expr, denominator: nw.Expr) -> nw.Expr:
    """``numerator / denominator`` as a double, null when the denominator is 0 or null, the same on every engine.

    Narwhals turns ``/`` into Spark's ``try_divide``, which Sail 0.7.2 refuses for doubles; a multiplication by
    the reciprocal runs on Polars, JVM Spark and Sail alike.
    """
    den = denominator.cast(nw.Float64)
    return nw.when(den != 0).then(numerator.cast(nw.Float64) * den**-1)


def first_match(branches: Iterable[tuple[nw.Expr, nw.Expr]], otherwise: nw.Expr | None = None) -> nw.Expr:
    """The value of the first ``(condition, value)`` branch whose condition is true, else ``otherwise`` (null
    when None): a SQL CASE. Values must not be null (a true branch with a null value would fall through).

    A flat ``coalesce`` of one ``when`` per branch, not Narwhals' chained ``when``, which nests each branch in
    the previous one's ``otherwise``: on Spark the nested column costs about twice as much per level."""
    arms = [nw.when(condition).then(value) for condition, value in branches]
    return nw.coalesce(*arms, otherwise if otherwise is not None else nw.lit(None, dtype=nw.String()))
