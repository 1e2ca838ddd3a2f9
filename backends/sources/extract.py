"""Pulling one entity from its source system into the landing folder, incrementally and resumably.

A connector (``backends/sources/*``) yields pieces of an entity: its rows as a table (or a stream's raw lines)
and a cursor saying where the next piece starts. This module turns them into landing files in the entity's own
format, under ``<landing>/<source>/<entity>/<run date>/extract-NNNNN.<ext>``, so that bronze reads them through
the same reader as files delivered by hand, and produces exactly the bronze rows the file path produces.

**Window.** A run date D fetches the rows whose watermark column is in ``[lo, hi)``: ``hi`` is the end of D
(or now, when D is today), ``lo`` is the previous finished extract's ``hi`` minus the lookback
(``lookback_days``), so rows that reached the source late with an older timestamp are still fetched. Rows in the
lookback that bronze already holds (the same record hash, ingested in the lookback's dates) are dropped: a record
version lands once (the engine is asked per file, so only the file's own hashes come back). The first extract has
no ``lo`` (``sources.first_from`` bounds it).

**Resume.** Every file is followed by one row in the Delta table ``<lake>/_extracts/<source>/<entity>`` with the
cursor after it; the last row of a date says ``done``. A run of a date that is done fetches nothing. A run of a
date that died midway keeps its recorded files, deletes a file written after the last recorded row, and
continues from the recorded cursor in the recorded window: no duplicates and no gaps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

import narwhals as nw
import polars as pl
import pyarrow as pa

from lakehouse.backends.expressions import with_record_hash
from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog, lake_log
from lakehouse.backends.sources.landing_writer import write_landing_file
from lakehouse.contracts.landing import LandingEntity

FILE_PREFIX = "extract-"


class SourceError(RuntimeError):
    """A source system could not be read (connection, authentication, an answer that is not what was expected)."""


@dataclass(frozen=True)
class Window:
    """The watermark range one run date fetches: ``lo`` (inclusive; None: from the beginning) to ``hi``."""

    lo: datetime | None
    hi: datetime

    def describe(self) -> str:
        return f"[{self.lo.isoformat() if self.lo else 'the beginning'}, {self.hi.isoformat()})"


@dataclass(frozen=True)
class Piece:
    """Part of an entity as fetched: ``rows`` (the source's columns, any types) or ``lines`` (a stream's raw
    records, written verbatim), and the cursor to resume after it."""

    cursor: str
    rows: pa.Table | None = None
    lines: list[str] | None = None
    note: str | None = None  # something to report about this piece (a day the FX vendor has no rates for)

    @property
    def size(self) -> int:
        return len(self.lines) if self.lines is not None else (self.rows.num_rows if self.rows is not None else 0)


class Connector(Protocol):
    """What every source connector offers the extract."""

    entity: LandingEntity
    windowed: bool  # fetched by watermark window (SQL, REST); False: by its own position (a Kafka consumer)

    def describe(self) -> str:
        """Where it reads from, for logs and ``lakehouse sources check`` (no secret)."""

    def pieces(self, window: Window, cursor: str | None) -> Iterator[Piece]:
        """The entity's pieces in ``window``, starting after ``cursor`` (None: from the start of the window, or
        for a positional source its recorded start)."""

    def pending(self, window: Window, cursor: str | None) -> int | None:
        """How many records a run would fetch now (None when the source cannot tell without fetching)."""


@dataclass(frozen=True)
class ExtractLog:
    """The extract state of one entity, kept in the lake (see the module docstring)."""

    lake: Lake
    entity: LandingEntity

    @property
    def log(self) -> LakeLog:
        return lake_log(self.lake, "extracts", source=self.entity.source, entity=self.entity.entity)

    def rows(self) -> list[dict[str, Any]]:
        return self.log.rows()

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.log.append(rows)

    def plan(self, run_date: date, *, windowed: bool, lookback_days: int, first_from: date | None,
             now: datetime) -> Plan:
        """Where an extract of ``run_date`` stands (the log read once): done, to resume, or to start."""
        rows = self.rows()
        mine = [r for r in rows if r["run_date"] == run_date]
        if any(r["done"] for r in mine):
            return Plan(mine, done=True, window=None, cursor=None, seq=0)
        if mine:  # a run of this date died midway: same window, after its last recorded piece
            return Plan(mine, done=False, window=Window(mine[0]["window_from"], mine[0]["window_to"]),
                        cursor=mine[-1]["cursor"], seq=mine[-1]["seq"])
        done = [r for r in rows if r["done"] and r["run_date"] < run_date]
        previous = done[-1] if done else None
        window = window_for(run_date, previous, lookback_days=lookback_days, first_from=first_from, now=now)
        # a positional source (Kafka) goes on from where the previous finished extract left off
        return Plan(mine, done=False, window=window,
                    cursor=None if windowed or previous is None else previous["cursor"], seq=0)


@dataclass(frozen=True)
class Plan:
    """An extract of one date: its log rows so far, whether it is done, its window, cursor and last piece."""

    mine: list[dict[str, Any]]
    _: KW_ONLY
    done: bool
    window: Window | None
    cursor: str | None
    seq: int

    @property
    def resuming(self) -> bool:
        return bool(self.mine) and not self.done


@dataclass
class ExtractResult:
    entity: str
    run_date: date
    window: Window | None
    files: list[str]
    rows: int
    dropped: int
    skipped: bool  # the date was already extracted
    resumed_from: str | None
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        return {"stage": "extract", "table": f"landing:{self.entity}", "rows_in": self.rows + self.dropped,
                "rows_written": self.rows, "dropped_known": self.dropped, "files": len(self.files),
                "skipped": self.skipped, "resumed": self.resumed_from is not None,
                "window": self.window.describe() if self.window else None, "notes": self.notes}


def window_for(run_date: date, previous: dict[str, Any] | None, *, lookback_days: int, first_from: date | None,
               now: datetime) -> Window:
    """The window of ``run_date`` after the ``previous`` finished extract (see the module docstring)."""
    hi = min(datetime.combine(run_date + timedelta(days=1), time(), UTC), now)
    if previous is not None and previous["window_to"] is not None:
        lo: datetime | None = previous["window_to"] - timedelta(days=lookback_days)
    else:
        lo = datetime.combine(first_from, time(), UTC) if first_from else None
    if lo is not None and lo >= hi:
        lo = hi - timedelta(days=lookback_days)
    return Window(lo, hi)


def run_extract(connector: Connector, *, lake: Lake, landing_root: Path, run_date: date, run_id: str,
                lookback_days: int, first_from: date | None, chunk_rows: int,
                already_landed: Callable[[date, pa.Array], pa.Array | pa.ChunkedArray], now: datetime | None = None,
                logger: logging.Logger | None = None) -> ExtractResult:
    """Fetch ``connector``'s entity for ``run_date`` into landing files, resuming a run that died midway.

    ``already_landed(first, hashes)``: which of ``hashes`` (a file's records) bronze holds for the ingest dates
    from ``first`` on (the lookback's rows already landed, also by a later date run first), asked once per file,
    so only a file's own hashes are held here; ``chunk_rows``: rows per landing file."""
    entity = connector.entity
    log = ExtractLog(lake, entity)
    logger = logger or logging.getLogger(__name__)
    plan = log.plan(run_date, windowed=connector.windowed, lookback_days=lookback_days, first_from=first_from,
                    now=now or datetime.now(UTC))
    mine = plan.mine
    if plan.done:
        files = [r["file"] for r in mine if r["file"]]
        logger.info("%s: %s already extracted (%d file(s)); nothing to fetch", entity.name, run_date, len(files))
        return ExtractResult(entity.name, run_date, None, files, 0, 0, True, None, [])
    folder = entity.folder(landing_root, run_date)
    folder.mkdir(parents=True, exist_ok=True)
    window, cursor, seq = plan.window, plan.cursor, plan.seq
    assert window is not None
    if plan.resuming:
        logger.warning("%s: resuming the extract of %s after piece %d (cursor %s)", entity.name, run_date, seq,
                       cursor)
    resumed_from = cursor if plan.resuming else None
    recorded = {r["file"] for r in mine if r["file"]}
    for stray in sorted([*folder.glob(f"{FILE_PREFIX}*"), *folder.glob(f".{FILE_PREFIX}*.tmp")]):
        if stray.relative_to(landing_root).as_posix() not in recorded:
            logger.warning("%s: removing %s, written by a run that died before recording it", entity.name, stray)
            stray.unlink()
    first = window.lo.date() - timedelta(days=1) if connector.windowed and window.lo is not None else None
    files = sorted(recorded)
    rows = sum(r["rows"] for r in mine)
    dropped = sum(r["dropped"] for r in mine)
    notes: list[str] = [r["note"] for r in mine if r["note"]]
    logger.info("%s: extracting %s from %s, window %s", entity.name, run_date, connector.describe(),
                window.describe() if connector.windowed else f"from position {cursor or 'start'}")
    for batch, batch_cursor, batch_notes in _chunks(connector.pieces(window, cursor), chunk_rows):
        seq += 1
        written, gone, relative = 0, 0, None
        if batch is not None:
            if isinstance(batch, list):
                kept: list[str] | pa.Table = batch
                written = len(batch)
            else:
                text = landing_text(batch, entity)
                kept, gone = _drop_known(text, entity, first, already_landed) if first else (text, 0)
                written = kept.num_rows
            if written:
                relative = _write_file(entity, folder / f"{FILE_PREFIX}{seq:05d}{entity.suffix}", kept, landing_root)
                files.append(relative)
        rows, dropped = rows + written, dropped + gone
        notes += batch_notes
        log.append([_log_row(run_date, seq, relative, written, gone, batch_cursor, window, False,
                             "; ".join(batch_notes) or None, run_id)])
        cursor = batch_cursor
        logger.info("%s: piece %d written (%d rows, %d already landed; %d rows so far)", entity.name, seq, written,
                    gone, rows)
    log.append([_log_row(run_date, seq + 1, None, 0, 0, cursor, window, True, None, run_id)])
    logger.info("%s: %s extracted: %d rows in %d file(s), %d rows of the lookback already landed", entity.name,
                run_date, rows, len(files), dropped)
    return ExtractResult(entity.name, run_date, window, files, rows, dropped, False, resumed_from, notes)


def _chunks(pieces: Iterator[Piece], chunk_rows: int) -> Iterator[tuple[pa.Table | list[str] | None, str, list[str]]]:
    """Pieces gathered into files of at least ``chunk_rows`` records (a piece is never split: its cursor is the
    resume point), with the cursor after the last piece and the pieces' notes."""
    tables: list[pa.Table] = []
    lines: list[str] = []
    notes: list[str] = []
    size, cursor, pending = 0, None, False
    for piece in pieces:
        pending = True
        if piece.rows is not None and piece.rows.num_rows:
            tables.append(piece.rows)
        if piece.lines:
            lines += piece.lines
        if piece.note:
            notes.append(piece.note)
        size += piece.size
        cursor = piece.cursor
        if size >= chunk_rows:
            yield _gathered(tables, lines), cursor, notes
            tables, lines, notes, size, pending = [], [], [], 0, False
    if pending and cursor is not None:
        yield _gathered(tables, lines), cursor, notes


def _gathered(tables: list[pa.Table], lines: list[str]) -> pa.Table | list[str] | None:
    if lines:
        return lines
    if tables:
        return pa.concat_tables(tables, promote_options="permissive")
    return None


def _log_row(run_date: date, seq: int, file: str | None, rows: int, dropped: int, cursor: str | None,
             window: Window, done: bool, note: str | None, run_id: str) -> dict[str, Any]:
    return {"run_date": run_date, "seq": seq, "file": file, "rows": rows, "dropped": dropped, "cursor": cursor,
            "window_from": window.lo, "window_to": window.hi, "done": done, "note": note, "run_id": run_id,
            "written_at": datetime.now(UTC)}


# ------------------------------------------------------------------------------------------------ landing text
_TS = "%Y-%m-%dT%H:%M:%SZ"
_TS_FRACTION = "%Y-%m-%dT%H:%M:%S%.6fZ"


def landing_text(rows: pa.Table, entity: LandingEntity) -> pa.Table:
    """``rows`` (a source's typed columns, matched to the landing columns by name, any case) as the landing
    format's text: timestamps ISO 8601 UTC (naive ones are taken as UTC), dates ``YYYY-MM-DD``, decimals as
    stored (their scale kept), other values as text. An error names the columns a source lacks."""
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    by_lower = {c.lower(): c for c in frame.columns}
    missing = [c for c in entity.column_names if c not in by_lower]
    if missing:
        msg = (f"expected column(s) {missing} of {entity.name} from its source, got columns {frame.columns}; map the "
               "source's columns to the landing format (docs/landing.md)")
        raise SourceError(msg)
    exprs = []
    for name in entity.column_names:
        col = pl.col(by_lower[name])
        dtype = frame.schema[by_lower[name]]
        if isinstance(dtype, pl.Datetime):
            utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            expr = pl.when(utc.dt.microsecond() == 0).then(utc.dt.strftime(_TS)).otherwise(utc.dt.strftime(_TS_FRACTION))
        elif isinstance(dtype, pl.Date):
            expr = col.dt.strftime("%Y-%m-%d")
        elif dtype == pl.Boolean:
            expr = pl.when(col).then(pl.lit("true")).otherwise(pl.lit("false"))
        elif isinstance(dtype, pl.Decimal) and dtype.scale == 0:
            expr = col.cast(pl.Int64).cast(pl.String)
        else:
            expr = col.cast(pl.String)
        exprs.append(expr.alias(name))
    return frame.select(exprs).to_arrow()


def _drop_known(text: pa.Table, entity: LandingEntity, first: date,
                already_landed: Callable[[date, pa.Array], pa.Array | pa.ChunkedArray]) -> tuple[pa.Table, int]:
    """``text`` without the records bronze already holds from ``first`` on; how many were dropped."""
    if text.num_rows == 0:
        return text, 0
    hashed = with_record_hash(nw.from_native(pl.from_arrow(text).lazy()), entity.column_names, out="_h")
    frame = nw.to_native(hashed).collect()
    known = pl.from_arrow(already_landed(first, frame.get_column("_h").to_arrow()))
    assert isinstance(known, pl.Series)
    if known.len() == 0:
        return text, 0
    kept = frame.filter(~pl.col("_h").is_in(known.cast(pl.String).implode())).drop("_h")
    return kept.to_arrow(), frame.height - kept.height


def _write_file(entity: LandingEntity, path: Path, payload: pa.Table | list[str], root: Path) -> str:
    """Write one landing file (atomically: sources/landing_writer.py); its path under ``root``."""
    frame = payload if isinstance(payload, list) else pl.from_arrow(payload)
    assert isinstance(frame, pl.DataFrame | list)
    write_landing_file(entity, path, frame)
    return path.relative_to(root).as_posix()
