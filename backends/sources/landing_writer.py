"""The one landing-file writer: the sample generator and every source connector write landing files through it,
in the format the entity's declaration names (contracts/landing.py), so what they land reads back the same way.

A file is written under a temporary name, flushed to disk, then renamed into place, so a reader never sees half a
file and a crash leaves at most a hidden ``.<name>.tmp`` behind. Under an S3 root the file is written to a local
temporary file, then uploaded as one object (a reader sees the whole object or none).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import polars as pl

from lakehouse.backends.storage import AnyPath, S3Path
from lakehouse.contracts.landing import LandingEntity

PARQUET_ROW_GROUP = 1_000_000  # rows per Parquet row group: a reader streams a file group by group


def write_landing_file(entity: LandingEntity, path: AnyPath, payload: pl.DataFrame | pl.Series | list[str]) -> int:
    """Write ``payload`` as the landing file ``path`` of ``entity``; how many records it holds.

    A frame is written in the entity's format (CSV with a header, typed Parquet, or one JSON object per row); a
    Series of strings is JSON lines written verbatim, a list of strings JSON lines whose own newlines become
    spaces (one record per line).
    """
    if isinstance(path, S3Path):
        with tempfile.TemporaryDirectory(prefix="lakehouse-landing-") as folder:
            local = Path(folder) / path.name
            rows = write_landing_file(entity, local, payload)
            path.upload(local)
        return rows
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(payload, list):
        payload = pl.Series("line", [line.rstrip("\n").replace("\n", " ") for line in payload], dtype=pl.String)
    if isinstance(payload, pl.Series):
        rows = payload.len()
        lines = payload.to_frame("line")
        if rows:
            lines.write_csv(tmp, include_header=False, quote_style="never", line_terminator="\n")
        else:
            tmp.write_bytes(b"")
    else:
        rows = payload.height
        if entity.format == "csv":
            payload.write_csv(tmp, include_header=True, null_value="", line_terminator="\n", quote_style="necessary")
        elif entity.format == "parquet":
            payload.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True,
                                  row_group_size=PARQUET_ROW_GROUP)
        else:
            tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in payload.to_dicts()),
                           encoding="utf-8")
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    return rows
