"""What every engine's landing reader shares: the shape of rejected records and how they are described.

A record that cannot become a bronze row (a line that is not a JSON object, a file missing a declared
column) is returned as a reject with the quarantine columns, so that both engines quarantine it identically.
"""

from __future__ import annotations

import json

import polars as pl
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


def missing_columns(raw: pl.DataFrame, entity: LandingEntity, file_name: str, missing: list[str], label: str) -> pa.Table:
    """A file missing declared columns is not ingested: every record goes to quarantine, naming the columns."""
    reason = (
        f"expected column(s) {missing} in {file_name} ({entity.name}), got columns {raw.columns}; "
        "fix the export or the column names and replay the file"
    )
    text = raw.select(pl.all().cast(pl.Utf8))
    records = [json.dumps(r, ensure_ascii=False) for r in text.iter_rows(named=True)]
    return pa.Table.from_pylist(
        [{"rule": "schema.missing_column", "reason": reason, "record": rec, "record_hash": record_digest([rec]),
          "source_file": label} for rec in records],
        schema=REJECT_SCHEMA,
    )


def partition_predicate(values: dict[str, list], alias: str | None = None) -> str:
    """A SQL predicate matching exactly the given partition values (``{column: [values]}``)."""
    prefix = f"{alias}." if alias else ""
    parts = []
    for col, vals in values.items():
        literals = ", ".join("NULL" if v is None else f"'{v}'" for v in sorted(vals, key=lambda v: (v is None, v)))
        parts.append(f"{prefix}{col} IN ({literals})")
    return " AND ".join(parts)
