"""What every engine's landing reader shares: the shape of rejected records and how they are described.

A record that cannot become a bronze row (a line that is not a JSON object) is returned as a reject with the
quarantine columns, so that both engines quarantine it identically. A file whose schema is wrong (a declared
column missing or renamed, a column that cannot be read as text) is refused whole, by the same test on both.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from backends.expressions import record_digest
from contracts.catalog import QUARANTINE_COLUMNS
from contracts.landing import LandingEntity

REJECT_SCHEMA = pa.schema([(c, pa.large_string()) for c in ("rule", "reason", "record", "record_hash", "source_file")])
assert set(REJECT_SCHEMA.names) <= set(QUARANTINE_COLUMNS)

MALFORMED_JSON = "parse.malformed_json"
MALFORMED_JSON_REASON = "expected one JSON object per line, got text that does not parse"


def malformed_lines(lines: list[tuple[str, str]]) -> pa.Table:
    """Rejects for ``(line, source_file)`` pairs that are not JSON objects."""
    return pa.Table.from_pylist(
        [{"rule": MALFORMED_JSON, "reason": MALFORMED_JSON_REASON, "record": line, "record_hash": record_digest([line]),
          "source_file": label} for line, label in lines],
        schema=REJECT_SCHEMA,
    )


REFUSED_SCHEMA = pa.schema([(c, pa.large_string()) for c in ("source_file", "problem", "reason")])
MISSING_COLUMN = "schema.missing_column"
UNCASTABLE_COLUMN = "schema.uncastable_column"


def refused_file(entity: LandingEntity, file_name: str, label: str, *, got: dict[str, str],
                 nested: Callable[[str], bool]) -> dict[str, str] | None:
    """Why a file of ``entity`` cannot be read (``got``: its column -> type name; ``nested(column)``: the
    engine's test for a type that does not cast to text), or None when it can. Such a file is not ingested."""
    missing = [c for c in entity.column_names if c not in got]
    keep = "the file was not ingested and stays where it is: fix it and run its date again"
    if missing:
        extra = [c for c in got if c not in entity.column_names]
        reason = (f"expected column(s) {missing} in {file_name} ({entity.name}), got columns {list(got)}"
                  + (f" ({extra} not declared: renamed?)" if extra else "") + f"; {keep}")
        return {"source_file": label, "problem": MISSING_COLUMN, "reason": reason}
    bad = {c: got[c] for c in entity.column_names if nested(c)}
    if bad:
        reason = (f"expected column(s) {list(bad)} of {file_name} ({entity.name}) as text or a scalar that casts "
                  f"to text, got {bad}; {keep}")
        return {"source_file": label, "problem": UNCASTABLE_COLUMN, "reason": reason}
    return None


def refused_table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REFUSED_SCHEMA)


def partition_predicate(values: dict[str, list], alias: str | None = None) -> str:
    """A SQL predicate matching exactly the given partition values (``{column: [values]}``)."""
    prefix = f"{alias}." if alias else ""
    parts = []
    for col, vals in values.items():
        literals = ", ".join("NULL" if v is None else f"'{v}'" for v in sorted(vals, key=lambda v: (v is None, v)))
        parts.append(f"{prefix}{col} IN ({literals})")
    return " AND ".join(parts)
