"""Table-level audits on Narwhals frames, the same on every engine, as declared in ``contracts.catalog``:
referential integrity (``TableSpec.references``) and the row count against the last release
(``TableSpec.max_row_drop``). A failure counts the failing rows and keeps a few as a sample, so a person can
see what broke."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import narwhals as nw

from lakehouse.contracts.catalog import Reference, TableSpec

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class AuditFailure:
    table: str
    rule: str
    reason: str
    failing_rows: int
    sample: list[dict[str, Any]] = field(default_factory=list)


def orphans(child: nw.LazyFrame, parent: nw.LazyFrame, ref: Reference) -> nw.LazyFrame:
    """Rows of ``child`` whose non-null ``ref.columns`` are not a key of ``parent``."""
    keys = parent.select([nw.col(to).alias(col) for col, to in zip(ref.to, ref.columns, strict=True)]).unique()
    present = nw.all_horizontal(*[~nw.col(c).is_null() for c in ref.columns], ignore_nulls=False)
    return child.filter(present).join(keys, on=list(ref.columns), how="anti")


def check_references(spec: TableSpec, scan: Callable[[str], nw.LazyFrame],
                     collect: Callable[[nw.LazyFrame], list[dict[str, Any]]]) -> list[AuditFailure]:
    """Every declared reference of ``spec``; ``scan(name)`` gives a table as audited, ``collect`` runs a frame."""
    failures = []
    for ref in spec.references:
        bad = orphans(scan(spec.name), scan(ref.table), ref)
        count = collect(bad.select(nw.len().alias("n")))[0]["n"]
        if count:
            sample = collect(bad.select(*spec.columns).sort(*spec.keys or spec.columns[:1]).head(SAMPLE_ROWS))
            reason = (f"expected every {', '.join(ref.columns)} of {spec.name} to exist as {', '.join(ref.to)} in "
                      f"{ref.table}; {count} row(s) do not")
            failures.append(AuditFailure(spec.name, ref.rule_id, reason, count, sample))
    return failures


def lost_keys(before: nw.LazyFrame, after: nw.LazyFrame, columns: Sequence[str]) -> nw.LazyFrame:
    """Distinct ``columns`` values a parent table had ``before`` and no longer has ``after``. With several
    references to one parent, the union of their columns asks once: when no combination was lost, no value of
    any one column was (a lost combination is conservative: the caller checks everything)."""
    old = before.select(*columns).unique()
    return old.join(after.select(*columns).unique(), on=list(columns), how="anti")


def check_row_drop(spec: TableSpec, rows: int, released_rows: int | None) -> AuditFailure | None:
    """A failure when ``spec`` has fewer than ``(1 - max_row_drop)`` of the rows it had at the last release."""
    if spec.max_row_drop is None or not released_rows or rows >= released_rows * (1 - spec.max_row_drop):
        return None
    reason = (f"expected {spec.name} to keep at least {1 - spec.max_row_drop:.0%} of the {released_rows:,} rows of "
              f"the current release, got {rows:,} ({rows / released_rows - 1:+.1%})")
    return AuditFailure(spec.name, "rows.dropped", reason, released_rows - rows)



def check_freshness(spec: TableSpec, newest_ingest: date | None, run_date: date) -> AuditFailure | None:
    """A failure when the newest delivery feeding ``spec`` (its bronze table's largest ``_ingest_date``) is more
    than its gate's ``max_age_days`` before ``run_date``. A table never delivered is not judged here."""
    limit = spec.gate.max_age_days
    if limit is None or newest_ingest is None:
        return None
    age = (run_date - newest_ingest).days
    if age <= limit:
        return None
    reason = (f"expected a delivery to {spec.source} within {limit} day(s) before {run_date}, the newest was "
              f"ingested for {newest_ingest} ({age} days before): has the source stopped delivering?")
    return AuditFailure(spec.name, "freshness.stale", reason, 0)
