"""The landing reader every engine shares: each file of an entity's folder is read into text columns or refused
whole, and each record that cannot become a row is a reject carrying its raw bytes.

Both engines call :func:`read_files` and only convert its Arrow result, so the same bytes give the same rows,
rejects and refusals on the laptop and on Spark. Paths are opened as paths (never globbed); compressed files
(gzip, zstd) are recognised by their first bytes; a file is read as a stream with every record bounded
(``contracts.landing.READ_LIMITS``), so a hostile file costs bounded memory and time.

Row semantics, per format (docs/landing.md says the same):
- CSV: RFC 4180 with a header row; UTF-8 with or without a BOM; LF or CRLF line ends (a lone CR is data);
  empty lines are skipped; an empty field is null. A quoted field may span lines; a line that opens a quote no
  later line closes into a record of the header's width is quarantined alone and reading goes on with the next.
- JSON lines: one object per line (blank lines skipped); a string, number (its literal text) or boolean
  (``true``/``false``) value is kept as text, null as null.
- Parquet: typed columns give the text a CSV would carry (:func:`_canonical_text`): timestamps in UTC as
  ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` (a timestamp without a zone is UTC), dates ``YYYY-MM-DD``, decimals with
  their scale, booleans ``true``/``false``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from lakehouse.backends.arrow_rows import arrow_table, empty_table, int_array, scalar, text_array
from lakehouse.backends.storage import AnyPath, ArrowRaw, S3Path
from lakehouse.contracts.catalog import QUARANTINE_COLUMNS
from lakehouse.contracts.expressions import record_digest
from lakehouse.contracts.landing import FILE_RULES, READ_LIMITS, RECORD_RULES, LandingEntity, ReadLimits

REJECT_SCHEMA = pa.schema([(c, pa.large_string()) for c in ("rule", "reason", "record", "record_hash", "source_file")])
assert set(REJECT_SCHEMA.names) <= set(QUARANTINE_COLUMNS)
REFUSED_SCHEMA = pa.schema([(c, pa.large_string()) for c in ("source_file", "problem", "reason")])

_FLUSH_ROWS = 65_536
# Plain JSON lines decoded by one call of Arrow's decoder (of several small files, or of one file's block). The
# day's 257 order-event files (0.6 MB each), 64 files per read: one call per file 2.75-3.3 s and a peak RSS of
# 180-195 MB; 4 MiB per call 2.0-2.2 s and 213-230 MB. 32 MiB per call (joined as bytes) was no faster and took
# 335 MB, which the process then kept.
_DECODE_BYTES = 4 << 20
_KEEP = "the file was not ingested and stays where it is: fix it and run its date again"
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


# ------------------------------------------------------------------------------------------------ listing
@dataclass(frozen=True)
class LandingFolder:
    """The files of one entity's date folder: those it reads (``(path, label)``, sorted by name), those refused
    for their name, and hidden or marker files (``.*``, ``_*``, e.g. ``_SUCCESS``) that are not deliveries."""

    files: list[tuple[AnyPath, str]]
    refused: list[dict[str, str]]
    ignored: list[str]


def list_folder(entity: LandingEntity, folder: AnyPath, root: AnyPath) -> LandingFolder:
    """Every entry of ``folder``: read, refused (an extension the entity does not accept, a sub-folder) or ignored."""
    files: list[tuple[AnyPath, str]] = []
    refused: list[dict[str, str]] = []
    ignored: list[str] = []
    if not folder.is_dir():
        return LandingFolder(files, refused, ignored)
    accepted = entity.accepted_suffixes
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        label = path.relative_to(root).as_posix()
        if path.name.startswith((".", "_")):
            ignored.append(label)
        elif path.is_file() and path.name.lower().endswith(accepted):
            files.append((path, label))
        else:
            what = "a folder" if path.is_dir() else f"a file named {path.name!r}"
            refused.append(_refusal(label, "file.extension",
                                    f"expected a file named *{', *'.join(accepted)} in {entity.name}'s folder, got "
                                    f"{what}; {_KEEP} (rename it, or move it to its entity's folder)"))
    return LandingFolder(files, refused, ignored)


class MissingDeliveryError(RuntimeError):
    """A run date lacks the delivery of an entity that delivers every day; nothing was written."""


@dataclass(frozen=True)
class MissingDelivery:
    """An entity delivered every day (``delivery="daily"``) with no file it reads in its folder for the date."""

    entity: str
    folder: AnyPath
    found: str  # what the folder holds instead, in words


def missing_deliveries(entities: Iterable[LandingEntity], root: AnyPath, run_date: date) -> list[MissingDelivery]:
    """The entities of ``entities`` declared ``daily`` whose folder for ``run_date`` holds no file they read
    (none, no folder, or only files of other extensions, hidden or marker files). An empty file is a delivery."""
    missing = []
    for entity in entities:
        if entity.delivery != "daily":
            continue
        folder = entity.folder(root, run_date)
        listed = list_folder(entity, folder, root)
        if listed.files:
            continue
        others = [r["source_file"].rsplit("/", 1)[-1] for r in listed.refused]
        others += [label.rsplit("/", 1)[-1] for label in listed.ignored]
        found = ("no such folder" if not folder.is_dir() else
                 f"only {', '.join(others)} (not *{', *'.join(entity.accepted_suffixes)})" if others else "no file")
        missing.append(MissingDelivery(entity.name, folder, found))
    return missing


def missing_message(missing: list[MissingDelivery], run_date: date) -> str:
    """One message naming each missing delivery, where it was looked for, and the ways on."""
    names = " ".join(f"--allow-missing {m.entity}" for m in missing)
    return (f"expected a delivery for {run_date} of every entity delivered daily; missing: "
            + "; ".join(f"{m.entity} (looked in {m.folder}: {m.found})" for m in missing)
            + f". Nothing was written and the date is not done: deliver the file(s) (an empty file when nothing "
              f"changed) and run the date again, or, if the source sent nothing that day, run it with {names}")


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class ArrowRead:
    """Landing files of one entity as Arrow: ``rows`` (declared columns as text + ``_source_file``),
    ``rejects`` (quarantine columns), ``refused`` (``source_file, problem, reason``); ``records`` counts each
    file's input records (rows + rejects) so a stage can check that nothing was lost."""

    rows: pa.Table
    rejects: pa.Table
    refused: pa.Table
    records: dict[str, int] = field(default_factory=dict)


class _Refused(Exception):  # a control-flow signal inside this module, never raised out of it
    def __init__(self, problem: str, reason: str) -> None:
        super().__init__(problem)
        self.problem, self.reason = problem, reason


def read_files(entity: LandingEntity, files: Sequence[tuple[AnyPath, str]], *,
               limits: ReadLimits = READ_LIMITS) -> ArrowRead:
    """Read ``files`` (``(path, label)``) of ``entity``. A file is all or nothing: its rows and rejects are kept
    only when the whole file was read; a file that cannot be read is refused with a reason, and the rest go on."""
    columns = entity.column_names
    row_tables: list[pa.Table] = []
    rejects: list[dict[str, str]] = []
    refused: list[dict[str, str]] = []
    records: dict[str, int] = {}
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[entity.format]
    pending = _JsonBatch(min(limits.json_chunk_bytes, _DECODE_BYTES))  # several files' JSON lines, one decode
    read: list[_FileOut] = []
    for path, label in files:
        out = _FileOut(label, columns, limits, pending)
        try:
            if entity.format != "jsonl" and path.stat().st_size == 0:  # an empty JSON-lines file has no rows
                raise _Refused("file.empty", f"expected a {entity.format} file for {entity.name} (a CSV carries at "
                                             f"least its header row), got an empty (0-byte) {path.name}; {_KEEP}")
            reader(entity, path, out)
        except _Refused as refusal:
            pending.drop(out)
            refused.append(_refusal(label, refusal.problem, refusal.reason))
            continue
        except (OSError, EOFError, ValueError, pa.ArrowException) as error:  # a broken stream, a truncated file
            pending.drop(out)
            refused.append(_refusal(label, "file.unreadable",
                                    f"expected a readable {entity.format} file for {entity.name}, got {path.name} that "
                                    f"fails to read ({type(error).__name__}); {_KEEP}"))
            continue
        read.append(out)
        if not pending.parts:  # every line of the files read so far is decoded: their rows are final
            _finish(read, row_tables, rejects, records)
    pending.decode()
    _finish(read, row_tables, rejects, records)
    schema = pa.schema([(c, pa.large_string()) for c in (*columns, "_source_file")])
    rows = pa.concat_tables(row_tables) if row_tables else empty_table(schema)
    return ArrowRead(rows, arrow_table(rejects, REJECT_SCHEMA) if rejects else empty_table(REJECT_SCHEMA),
                     arrow_table(refused, REFUSED_SCHEMA) if refused else empty_table(REFUSED_SCHEMA), records)


def _finish(read: list[_FileOut], row_tables: list[pa.Table], rejects: list[dict[str, str]],
            records: dict[str, int]) -> None:
    """The files ``read`` (whose lines are all decoded) added to the read's rows, rejects and records, and let go."""
    for out in read:
        table = out.table()
        row_tables.append(table)
        rejects.extend(out.rejects)
        records[out.label] = table.num_rows + len(out.rejects)
    read.clear()


def _refusal(label: str, problem: str, reason: str) -> dict[str, str]:
    assert problem in FILE_RULES, problem
    return {"source_file": label, "problem": problem, "reason": reason}


class _FileOut:
    """What one file produced so far: value rows (column-wise) and rejects."""

    def __init__(self, label: str, columns: list[str], limits: ReadLimits, pending: _JsonBatch) -> None:
        self.label, self.columns, self.limits = label, columns, limits
        self.pending = pending  # where its plain JSON lines wait to be decoded
        self.values: list[list[str | None]] = [[] for _ in columns]
        self.tables: list[pa.Table] = []
        self.rejects: list[dict[str, str]] = []

    def row(self, values: Sequence[str | None], record: str) -> None:
        if any(v is not None and "\x00" in v for v in values):
            self.reject("encoding.nul_byte", "expected text without NUL characters, got a value holding one", record)
            return
        for column, value in zip(self.values, values, strict=True):
            column.append(value)
        if len(self.values[0]) >= _FLUSH_ROWS:  # rows held as Arrow, a fraction of Python strings' memory
            self._flush()

    def _flush(self) -> None:
        if self.values and self.values[0]:
            self.tables.append(pa.table([text_array(v) for v in self.values], names=self.columns))
            self.values = [[] for _ in self.columns]

    def reject(self, rule: str, reason: str, record: str) -> None:
        assert rule in RECORD_RULES, rule
        self.rejects.append({"rule": rule, "reason": reason, "record": record, "record_hash": record_digest([record]),
                             "source_file": self.label})

    def add_table(self, table: pa.Table, records: pa.Array | None, nul_possible: bool = True) -> None:
        """Rows decoded in bulk (declared columns as text); rows holding a NUL become rejects (``records``: the
        raw text of each row, or None to describe a row by its values; ``nul_possible=False``: the caller knows
        no value holds one). A column is searched value by value only when its value bytes hold a NUL."""
        nul = None
        for c in self.columns if nul_possible else ():
            if not _may_hold_nul(table[c]):
                continue
            has = pc.fill_null(pc.match_substring(table[c], "\x00"), scalar(False))
            nul = has if nul is None else pc.or_(nul, has)
        if nul is not None and pc.any(nul).as_py():
            for i in pc.indices_nonzero(nul).to_pylist():
                record = records[i].as_py() if records is not None else _row_record(table.slice(i, 1))
                self.reject("encoding.nul_byte", "expected text without NUL characters, got a value holding one",
                            record)
            table = table.filter(pc.invert(nul))
        self.tables.append(table.select(self.columns))

    def table(self) -> pa.Table:
        self._flush()
        text = pa.schema([(c, pa.large_string()) for c in self.columns])
        parts = [t.cast(text) for t in self.tables]
        table = pa.concat_tables(parts) if parts else empty_table(text)
        return table.append_column("_source_file", pa.repeat(text_array([self.label])[0], table.num_rows)
                                   if table.num_rows else text_array([]))


_NUL = re.compile(b"\x00")


def _may_hold_nul(column: pa.ChunkedArray) -> bool:
    """Whether a text column may hold a NUL: each chunk's value bytes (its own range of the data buffer, which a
    slice shares with the rows around it) are searched in one pass (memchr speed, a fifth of a search value by
    value). Another type than text is taken to hold one (the caller then searches its values)."""
    for chunk in column.chunks:
        large = pa.types.is_large_string(chunk.type)
        if not (large or pa.types.is_string(chunk.type)):
            return True
        _, offsets, data = chunk.buffers()
        if data is None or not len(chunk):
            continue
        fmt, width = ("<q", 8) if large else ("<i", 4)
        start = struct.unpack_from(fmt, offsets, chunk.offset * width)[0]
        end = struct.unpack_from(fmt, offsets, (chunk.offset + len(chunk)) * width)[0]
        if _NUL.search(data.slice(start, end - start)) is not None:  # type: ignore[call-overload]
            return True
    return False


def _row_record(row: pa.Table) -> str:
    return json.dumps({k: v[0] for k, v in row.to_pydict().items()}, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------------ streams
def _open(path: AnyPath) -> tuple[BinaryIO, bool]:
    """``path`` as a buffered byte stream, decompressed when its first bytes say gzip or zstd (whatever its
    name), and whether it was compressed. An uncompressed file is read from the stream that probed it (one
    open: on S3, one request fewer per file)."""
    probe = path.open("rb")
    magic = probe.read(4)
    compression = "gzip" if magic.startswith(_GZIP) else "zstd" if magic == _ZSTD else None
    if compression is None:
        named = next((c for c in (".gz", ".zst") if path.name.lower().endswith(c)), None)
        if named and magic:
            probe.close()
            raise _Refused("file.unreadable", f"expected {named} compressed data in {path.name} (its name says so), "
                                              f"got bytes that are not; {_KEEP}")
        probe.seek(0)
        return probe, False
    probe.close()
    source = path.open_arrow() if isinstance(path, S3Path) else str(path)
    raw = ArrowRaw(pa.input_stream(source, compression=compression))
    return io.BufferedReader(raw, buffer_size=1 << 20), True  # type: ignore[return-value]


def _lines(stream: BinaryIO, limit: int) -> Iterator[tuple[bytes, int]]:
    """Each line of ``stream`` with its end, and its length; a line longer than ``limit`` is yielded cut to
    ``limit`` bytes with its full length (the rest is read and dropped, so memory stays bounded)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, len(line)
            continue
        length = len(line)
        while True:
            more = stream.readline(limit)
            length += len(more)
            if not more or more.endswith(b"\n"):
                break
        yield line[:limit], length


def _escaped(raw: bytes) -> str:
    """Bytes as text: UTF-8 where it decodes, each other byte as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def _too_large(out: _FileOut, head: bytes, length: int, what: str) -> None:
    kept = out.limits.kept_record_bytes
    out.reject("parse.record_too_large",
               f"expected a {what} of at most {out.limits.max_record_bytes} bytes, got {length} bytes; the record "
               f"keeps its first {kept}", _escaped(head[:kept]) + f"...[{length - kept} more bytes not kept]")


def _strip_end(raw: bytes) -> bytes:
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw


# ------------------------------------------------------------------------------------------------ CSV
def _read_csv(entity: LandingEntity, path: AnyPath, out: _FileOut) -> None:
    stream, _ = _open(path)
    with stream:
        index, width = _csv_header(entity, path, _PushBack(_lines(stream, out.limits.max_record_bytes)), out.limits)
        rest = _plain_csv(stream, out, index, width)
        if rest is None:
            return
        lines = _PushBack(_lines(io.BufferedReader(_Prefixed(rest, stream)), out.limits.max_record_bytes))
        for raw, length in lines:
            if length > out.limits.max_record_bytes:
                _too_large(out, raw, length, "CSV record")
                continue
            body = _strip_end(raw)
            if not body:
                continue
            if b'"' not in body:
                fields: list[str] | None = body.decode("utf-8", "surrogateescape").split(",")
                record = body
            else:
                fields, record = _quoted_record(raw, lines, out, width)
                if fields is None:
                    continue
            try:
                record.decode("utf-8")
            except UnicodeDecodeError as error:
                out.reject("encoding.invalid_utf8", f"expected UTF-8 text, got byte 0x{record[error.start]:02x} at "
                                                    f"offset {error.start} of the record", _escaped(record))
                continue
            if len(fields) != width:
                out.reject("parse.field_count", f"expected {width} fields (the header's), got {len(fields)}",
                           record.decode("utf-8"))
                continue
            out.row([fields[i] or None for i in index], record.decode("utf-8"))


def _plain_csv(stream: BinaryIO, out: _FileOut, index: list[int], width: int) -> bytes | None:
    """Read the records after the header in blocks (of ``_DECODE_BYTES``, at most ``json_chunk_bytes``) cut at
    line ends, each block in bulk by Arrow's kernels while its lines are plain (see :func:`_plain_block`). At the
    first block that is not, the bytes from that block's start are returned, to be read line by line from there
    (and the stream's rest after them); None when the file ended on plain blocks. Both ways give the same rows
    and rejects; the scale-10 day's four CSV files (106k records) took 1.1 s line by line, 0.1-0.2 s so."""
    limit = out.limits.max_record_bytes
    carry = b""
    while block := stream.read(min(out.limits.json_chunk_bytes, _DECODE_BYTES)):
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > limit:  # a line longer than a record may be: the line reader cuts it short
                return data
            carry = data
            continue
        carry = data[cut + 1:]
        if not _plain_block(data[:cut + 1], out, index, width):
            return data
    if carry and not _plain_block(carry, out, index, width):
        return carry
    return None


def _plain_block(data: bytes, out: _FileOut, index: list[int], width: int) -> bool:
    """Add the records of ``data`` (whole lines with their ends) to ``out`` in bulk when every line is plain:
    UTF-8 without a quote or a NUL, LF or CRLF ends (no other CR), and short enough to be a record. Such a line
    is split at its commas exactly as the line reader splits it: an empty line is skipped, a line of another
    width than the header's is a reject (``parse.field_count``), an empty field is null. False (``out``
    untouched) when a line is not plain."""
    if b'"' in data or b"\x00" in data:
        return False
    if b"\r" in data:
        if data.count(b"\r") != data.count(b"\r\n"):
            return False
        data = data.replace(b"\r\n", b"\n")
    data = data.removesuffix(b"\n")
    try:
        text = _one_value(data).cast(pa.large_string())  # UTF-8 checked in place
    except pa.ArrowInvalid:
        return False
    lines = pc.list_flatten(pc.split_pattern(text, pattern="\n"))
    lengths = pc.binary_length(lines)
    # A line's length with its end (LF or CRLF) is what the line reader bounds.
    if (pc.max(lengths).as_py() or 0) + 2 > out.limits.max_record_bytes:
        return False
    commas = pc.count_substring(lines, pattern=",")
    nonempty, fits = pc.greater(lengths, scalar(0)), pc.equal(commas, scalar(width - 1))
    for i in pc.indices_nonzero(pc.and_(nonempty, pc.invert(fits))).to_pylist():
        record = lines[i].as_py()
        out.reject("parse.field_count", f"expected {width} fields (the header's), got {record.count(',') + 1}", record)
    keep = pc.and_(nonempty, fits)
    if not pc.all(keep).as_py():
        lines = lines.filter(keep)
    fields = pc.split_pattern(lines, pattern=",")
    empty, null = text_array(["", None])  # scalars of the columns' type (pa.scalar would import pandas)
    columns = []
    for i in index:
        value = pc.list_element(fields, scalar(i))
        columns.append(pc.if_else(pc.equal(value, empty), null, value))
    out.add_table(pa.table(columns, names=out.columns), None, nul_possible=False)
    return True


class _Prefixed(io.RawIOBase):
    """The bytes ``head``, then the rest of ``stream``, as one raw stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.head:
            return self.stream.readinto(buffer)  # type: ignore[attr-defined]
        n = min(len(buffer), len(self.head))
        buffer[:n] = self.head[:n]
        self.head = self.head[n:]
        return n


def _csv_header(entity: LandingEntity, path: AnyPath, lines: _PushBack, limits: ReadLimits) -> tuple[list[int], int]:
    """Positions of the declared columns in the header, and the header's width; refuses a bad header."""
    first = next(lines, None)
    if first is None:
        raise _Refused("file.empty", f"expected a CSV file with at least a header row for {entity.name}, got "
                                     f"{path.name} that holds nothing; {_KEEP}")
    if first[0].count(b",") >= limits.max_columns:
        raise _Refused("file.too_many_columns", f"expected at most {limits.max_columns} columns in {path.name} "
                                                f"({entity.name}), got a header of {first[1]} bytes with more; {_KEEP}")
    if first[1] > limits.max_record_bytes:
        raise _Refused("file.unreadable", f"expected a header row of at most {limits.max_record_bytes} bytes in "
                                          f"{path.name} ({entity.name}); {_KEEP}")
    raw = _strip_end(first[0])
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("file.encoding", f"expected a UTF-8 header row in {path.name} ({entity.name}), got bytes that "
                                        f"are not UTF-8; {_KEEP} (save it as UTF-8)") from None
    try:
        names = next(csv.reader([text], strict=True), [])
    except csv.Error:
        raise _Refused("file.unreadable", f"expected a CSV header row in {path.name} ({entity.name}), got a first line "
                                          f"whose quoting does not parse; {_KEEP}") from None
    _check_columns(entity, path.name, names, limits)
    return [names.index(c) for c in entity.column_names], len(names)


def _check_columns(entity: LandingEntity, file_name: str, names: list[str], limits: ReadLimits) -> None:
    if len(names) > limits.max_columns:
        raise _Refused("file.too_many_columns", f"expected at most {limits.max_columns} columns in {file_name} "
                                                f"({entity.name}), got {len(names)}; {_KEEP}")
    declared = entity.column_names
    missing = [c for c in declared if c not in names]
    if missing:
        extra = [c for c in names if c not in declared]
        shown = names if len(names) <= 50 else [*names[:50], "..."]
        raise _Refused("schema.missing_column",
                       f"expected column(s) {missing} in {file_name} ({entity.name}), got columns {shown}"
                       + (f" ({extra[:20]} not declared: renamed?)" if extra else "") + f"; {_KEEP}")
    twice = sorted({c for c in declared if names.count(c) > 1})
    if twice:
        raise _Refused("schema.duplicate_column", f"expected each declared column once in {file_name} "
                                                  f"({entity.name}), got {twice} more than once; {_KEEP}")


class _PushBack:
    """An iterator of lines that takes lines back (a failed multi-line record gives back all but its first)."""

    def __init__(self, lines: Iterator[tuple[bytes, int]]) -> None:
        self.lines, self.back = lines, []  # type: ignore[var-annotated]

    def __iter__(self) -> _PushBack:
        return self

    def __next__(self) -> tuple[bytes, int]:
        return self.back.pop() if self.back else next(self.lines)

    def give_back(self, items: list[tuple[bytes, int]]) -> None:
        self.back.extend(reversed(items))


def _quoted_record(first: bytes, lines: _PushBack, out: _FileOut, width: int) -> tuple[list[str] | None, bytes]:
    """Parse a record that holds a quote, taking more lines while a quoted field stays open. A record that does
    not parse cleanly is quarantined: alone when it is one line, as its first line (``parse.unmatched_quote``)
    when it took more, the other lines given back."""
    taken = [(first, len(first))]
    budget = out.limits.max_record_bytes - len(first)

    def feed() -> Iterator[str]:
        nonlocal budget
        yield first.decode("utf-8", "surrogateescape")
        while True:
            item = next(lines, None)
            if item is None or item[1] > budget or len(item[0]) < item[1]:
                if item is not None:
                    lines.give_back([item])
                return
            taken.append(item)
            budget -= item[1]
            yield item[0].decode("utf-8", "surrogateescape")

    try:
        fields = next(csv.reader(feed(), strict=True))
    except (csv.Error, StopIteration):
        fields = None
    record = _strip_end(b"".join(raw for raw, _ in taken))
    if fields is not None and len(taken) == 1:
        return fields, record
    if fields is not None and len(fields) == width:
        return fields, record
    line = _strip_end(first)
    lines.give_back(taken[1:])
    if len(taken) == 1:
        out.reject("parse.malformed_row", "expected RFC 4180 quoting (a quoted field closed by a quote followed by "
                                          "a comma or the line end), got a line that breaks it", _escaped(line))
    else:
        out.reject("parse.unmatched_quote", "expected a quoted field to close into a record of the header's width, "
                                            "got a quote that no later line closes; the record ends at its own line "
                                            "end", _escaped(line))
    return None, line


# ------------------------------------------------------------------------------------------------ JSON lines
def _read_jsonl(entity: LandingEntity, path: AnyPath, out: _FileOut) -> None:
    """Read in blocks of ``json_chunk_bytes`` cut at line ends; a line longer than ``max_record_bytes`` is
    quarantined (its head kept) while the rest of it is read and dropped."""
    stream, _ = _open(path)
    limit = out.limits.max_record_bytes
    carry = b""
    skipping: list[Any] | None = None  # [head, length] of an over-long line being read past
    with stream:
        while block := stream.read(out.limits.json_chunk_bytes):
            if skipping is not None:
                end = block.find(b"\n")
                skipping[1] += len(block) if end < 0 else end + 1
                if end < 0:
                    continue
                _too_large(out, skipping[0], skipping[1], "JSON line")
                skipping, block = None, block[end + 1:]
            data = carry + block
            cut = data.rfind(b"\n")
            carry = data[cut + 1:]
            if cut >= 0:
                _json_chunk(data[:cut], out)
            if len(carry) > limit:
                skipping, carry = [carry[:limit], len(carry)], b""
        if skipping is not None:
            _too_large(out, skipping[0], skipping[1], "JSON line")
        elif carry:
            _json_chunk(carry, out)


def _one_value(data: bytes | pa.Buffer) -> pa.Array:
    """``data`` as a one-value binary array over the same memory (``pa.array([data])`` would import pandas)."""
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    offsets = pa.py_buffer(struct.pack("<qq", 0, buffer.size))
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, buffer])


def _json_chunk(data: bytes, out: _FileOut) -> None:
    """Decode JSON lines (``data``: lines joined by newlines): plainly flat objects (one brace pair, no bracket,
    no NaN/Infinity literal) in bulk by Arrow's decoder, every other line on its own. Both ways give the same
    rows: the bulk path only takes lines the line-by-line rules accept unchanged (a bulk decode that fails, or
    disagrees line for line, is split in halves down to single lines decoded on their own). The lines are told
    apart by Arrow's kernels, and a pattern no line holds is not searched line by line."""
    if b"\r" in data:  # what stripping each line would take off its end (the block's last line too)
        data = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
    lines = pc.list_flatten(pc.split_pattern(_one_value(data), pattern=b"\n"))
    lengths = pc.binary_length(lines)
    opens = pc.starts_with(lines, pattern=b"{")
    plain = pc.and_(pc.and_(opens, pc.ends_with(lines, pattern=b"}")),
                    pc.less_equal(lengths, scalar(out.limits.max_record_bytes)))
    for pattern in (b"[", b"NaN", b"Infinity"):
        if pattern in data:
            plain = pc.and_(plain, pc.invert(pc.match_substring(lines, pattern=pattern)))
    if data.count(b"{") != pc.sum(opens).as_py():  # a brace that does not open its line
        plain = pc.and_(plain, pc.equal(pc.count_substring(lines, pattern=b"{"), scalar(1)))
    other = pc.indices_nonzero(pc.invert(plain))
    others = other.to_pylist()
    longest = pc.max(lengths.filter(plain)).as_py() or 0
    if not others:
        out.pending.add(out, data, len(lines), longest)
        return
    # The plain lines' bytes are the data without the other lines (each line's end: its length and newline summed).
    ends = pc.cumulative_sum(pc.add(lengths, scalar(1))).take(other).to_pylist()
    keep, pos = [], 0
    for end, length in zip(ends, lengths.take(other).to_pylist(), strict=True):
        start, end = end - 1 - length, end - 1
        keep.append(data[pos:start])
        pos = end + 1
        line = data[start:end].strip(b" \t\r")
        if not line:
            continue
        if len(line) > out.limits.max_record_bytes:
            _too_large(out, line, len(line), "JSON line")
        else:
            _json_line(line, out)
    keep.append(data[pos:])
    if len(others) < len(lines):
        out.pending.add(out, b"".join(keep).rstrip(b"\n"), len(lines) - len(others), longest)


class _JsonBatch:
    """Plain JSON lines (see :func:`_json_chunk`) of one or more files, waiting to be decoded by Arrow in one
    call once they reach ``limit`` bytes (``_DECODE_BYTES``) or :meth:`decode` is called. A call costs a set-up
    and its threads' start besides the decode, and the order events come as many small files. Where a joined decode
    fails or gives another number of rows, each half of the parts is decoded again, down to a part on its own
    (:func:`_bulk`), so every file gets the rows a decode of its own lines gives."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[tuple[_FileOut, bytes, int, int]] = []  # (file, lines, how many, the longest's length)
        self.size = 0

    def add(self, out: _FileOut, data: bytes, count: int, longest: int) -> None:
        self.parts.append((out, data, count, longest))
        self.size += len(data) + 1
        if self.size >= self.limit:
            self.decode()

    def drop(self, out: _FileOut) -> None:
        """Forget the lines of ``out`` not decoded yet (its file was refused)."""
        self.parts = [part for part in self.parts if part[0] is not out]
        self.size = sum(len(part[1]) + 1 for part in self.parts)

    def decode(self) -> None:
        parts, self.parts, self.size = self.parts, [], 0
        try:
            _decode_parts(parts)
        except Exception as error:  # a defect, not a file's: never taken for a refusal of the file being read
            labels = sorted({part[0].label for part in parts})
            msg = f"expected the JSON lines of {labels} to decode or be quarantined, got {error!r}"
            raise RuntimeError(msg) from error


def _decode_parts(parts: list[tuple[_FileOut, bytes, int, int]]) -> None:
    """Decode the parts together; where that fails, each half of them, down to a part on its own (:func:`_bulk`)."""
    if not parts:
        return
    size = sum(len(part[1]) + 1 for part in parts)
    # Arrow decodes blocks on its threads; a block must hold the longest line.
    block = max(max(part[3] for part in parts), size // (2 * (os.cpu_count() or 1)), 64 << 10) + 1
    if len(parts) == 1:
        _bulk(parts[0][1], parts[0][2], parts[0][0], block)
        return
    # Joined in Arrow's memory pool, which gives it back once freed; a joined bytes object of megabytes stays in
    # the process's heap (the laptop day's peak RSS was 0.1-0.2 GiB higher so).
    data = pa.allocate_buffer(size - 1)
    writer = pa.FixedSizeBufferWriter(data)
    for i, part in enumerate(parts):
        if i:
            writer.write(b"\n")
        writer.write(part[1])
    table = _decoded(data, sum(part[2] for part in parts), parts[0][0].columns, block)
    if table is None:
        _decode_parts(parts[:len(parts) // 2])
        _decode_parts(parts[len(parts) // 2:])
        return
    start = 0
    for out, lines, count, _ in parts:
        _keep_decoded(out, lines, table.slice(start, count))
        start += count


def _decoded(data: bytes | pa.Buffer, count: int, columns: list[str], block: int | None) -> pa.Table | None:
    """``count`` plain JSON lines (joined by newlines) decoded by Arrow in blocks of ``block`` bytes (at least
    the longest line; None: one block); None where that fails or gives another number of rows."""
    try:
        _one_value(data).cast(pa.large_string())  # UTF-8 checked in place (a decode to str copies the data)
        schema = pa.schema([(c, pa.string()) for c in columns])
        table = pa_json.read_json(pa.BufferReader(data), read_options=pa_json.ReadOptions(
            block_size=block or len(data) + 1), parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))
    except pa.ArrowException:
        return None
    return table if table.num_rows == count else None


def _keep_decoded(out: _FileOut, data: bytes, table: pa.Table) -> None:
    """The rows Arrow decoded from ``data`` (lines joined by newlines) added to ``out``."""
    if b"\\u0000" in data:  # a NUL decoded into a value: the row is a reject, quoted as its line
        out.add_table(table, text_array([line.decode("utf-8") for line in data.split(b"\n")]))
    else:
        out.add_table(table, None)


def _bulk(data: bytes, count: int, out: _FileOut, block: int | None = None) -> None:
    """Decode ``count`` plain JSON lines (joined by newlines) by Arrow, in blocks of ``block`` bytes (at least
    the longest line; None: one block); where that fails or gives another number of rows, in halves down to
    single lines."""
    table = _decoded(data, count, out.columns, block)
    if table is not None:
        _keep_decoded(out, data, table)
        return
    lines = data.split(b"\n")
    if len(lines) <= 32:
        for line in lines:
            _json_line(line, out)
    else:
        half = len(lines) // 2
        _bulk(b"\n".join(lines[:half]), half, out)
        _bulk(b"\n".join(lines[half:]), len(lines) - half, out)


class _LineRejected(Exception):  # a control-flow signal inside this module
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(rule)
        self.rule, self.reason = rule, reason


def _number(text: str) -> str:
    if text in ("NaN", "Infinity", "-Infinity") or float(text) in (float("inf"), float("-inf")):
        raise _LineRejected("parse.nonfinite_number", f"expected a finite JSON number, got {text[:40]}")
    return text


class _Number(str):
    """A JSON number's literal text (kept as written)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise _LineRejected("parse.duplicate_key", f"expected each key once in a JSON object, got {twice[:5]} twice")
    return dict(pairs)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _json_line(raw: bytes, out: _FileOut) -> None:
    limits = out.limits
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        out.reject("encoding.invalid_utf8", f"expected UTF-8 text, got byte 0x{raw[error.start]:02x} at offset "
                                            f"{error.start} of the line", _escaped(raw))
        return
    try:
        if text.count("{") + text.count("[") > limits.max_json_depth:
            # Bracket runs are checked before decoding: a deep line costs no recursion.
            depth = level = 0
            in_string = escaped = False
            for ch in text:
                if in_string:
                    escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
                elif ch == '"':
                    in_string = True
                elif ch in "{[":
                    level += 1
                    depth = max(depth, level)
                elif ch in "}]":
                    level -= 1
            if depth > limits.max_json_depth:
                raise _LineRejected("parse.too_deep", f"expected JSON nested at most {limits.max_json_depth} levels, "
                                                      f"got {depth}")
        value = json.loads(text, parse_float=lambda s: _Number(_number(s)), parse_int=_Number,
                           parse_constant=_number, object_pairs_hook=_pairs)
    except _LineRejected as rejected:
        out.reject(rejected.rule, rejected.reason, text)
        return
    except (json.JSONDecodeError, RecursionError):
        out.reject("parse.malformed_json", "expected one JSON object per line, got text that does not parse", text)
        return
    if not isinstance(value, dict):
        out.reject("parse.not_an_object", f"expected one JSON object per line, got a JSON {type(value).__name__}",
                   text)
        return
    values: list[str | None] = []
    for c in out.columns:
        v = value.get(c)
        if isinstance(v, dict | list):
            out.reject("parse.nested_value", f"expected a text, number or boolean for {c!r}, got a JSON "
                                             f"{'object' if isinstance(v, dict) else 'array'}", text)
            return
        values.append(None if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v))
    try:
        for v in values:
            if v is not None:
                v.encode("utf-8")
    except UnicodeEncodeError:
        out.reject("encoding.invalid_utf8", "expected UTF-8 text, got a \\u escape of a lone surrogate", text)
        return
    out.row(values, text)


# ------------------------------------------------------------------------------------------------ Parquet
def _read_parquet(entity: LandingEntity, path: AnyPath, out: _FileOut) -> None:
    stream, compressed = _open(path)
    with stream:
        source: Any = io.BytesIO(stream.read()) if compressed else stream
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowException, OSError):
            raise _Refused("file.unreadable", f"expected a Parquet file for {entity.name}, got {path.name} that is "
                                              f"not Parquet or is truncated (no valid footer); {_KEEP}") from None
        schema = parquet.schema_arrow
        _check_columns(entity, path.name, schema.names, out.limits)
        types = {c: schema.field(c).type for c in entity.column_names}
        bad = {c: str(t) for c, t in types.items() if not _castable(t)}
        if bad:
            raise _Refused("schema.uncastable_column",
                           f"expected column(s) {list(bad)} of {path.name} ({entity.name}) as text or a scalar that "
                           f"casts to text, got {bad}; {_KEEP}")
        for batch in parquet.iter_batches(columns=entity.column_names, batch_size=256 * 1024):
            table = pa.Table.from_batches([batch])
            text, bad_rows = _canonical_text(table)
            if bad_rows:
                keep = [i for i in range(table.num_rows) if i not in bad_rows]
                for i, (rule, reason) in sorted(bad_rows.items()):
                    out.reject(rule, reason, _row_record(table.slice(i, 1)))
                text = text.take(int_array(keep))
            out.add_table(text, None)


def _castable(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return _castable(dtype.value_type)
    return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)
            or pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
            or pa.types.is_boolean(dtype) or pa.types.is_date(dtype) or pa.types.is_timestamp(dtype)
            or pa.types.is_null(dtype))


def _canonical_text(table: pa.Table) -> tuple[pa.Table, dict[int, tuple[str, str]]]:
    """Each column as the text a CSV file would carry for the same value, and the rows that cannot be text
    (row index -> rule, reason): a float NaN or infinity, a string that is not UTF-8."""
    bad: dict[int, tuple[str, str]] = {}
    out = []
    for name in table.column_names:
        col = table[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        t = col.type
        if pa.types.is_floating(t):
            finite = pc.is_finite(col)
            for i in pc.indices_nonzero(pc.invert(pc.fill_null(finite, scalar(True)))).to_pylist():
                bad.setdefault(i, ("parse.nonfinite_number", f"expected a finite number in {name!r}, got {col[i]}"))
            text = pc.if_else(pc.fill_null(finite, scalar(False)), col, pa.nulls(1, t)[0]).cast(pa.large_string())
        elif pa.types.is_boolean(t):
            text = pc.if_else(col, *text_array(["true", "false"])).cast(pa.large_string())
        elif pa.types.is_timestamp(t):
            text = _timestamp_text(col)
        elif pa.types.is_date(t):
            text = col.cast(pa.date32()).cast(pa.large_string())
        elif pa.types.is_null(t):
            text = pa.nulls(len(col), pa.large_string())
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            text = col.cast(pa.large_string())
            try:
                text.validate(full=True)
            except pa.ArrowInvalid:  # a string column holding bytes that are not UTF-8: those rows are rejects
                raw = col.cast(pa.large_binary()).to_pylist()
                decoded = [v.decode("utf-8", "replace") if v is not None else None for v in raw]
                for i, v in enumerate(raw):
                    if v is not None and decoded[i].encode("utf-8") != v:
                        reason = f"expected UTF-8 text in {name!r}, got bytes that are not"
                        bad.setdefault(i, ("encoding.invalid_utf8", reason))
                text = text_array(decoded)
        else:  # integers and decimals: their plain digits (a decimal keeps its scale)
            text = col.cast(pa.large_string())
        out.append(text)
    return pa.table(out, names=table.column_names), bad


_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_FOUR_DIGIT_YEARS = (-62_135_596_800, 253_402_300_800)  # 0001-01-01 and 10000-01-01 UTC, in seconds


def _timestamp_text(col: pa.Array) -> pa.Array:
    """Timestamps as UTC ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` (fraction without trailing zeros); a timestamp
    without a zone is taken as UTC."""
    unit = col.type.unit
    per = _PER_SECOND[unit]
    raw = col.cast(pa.int64())
    low, high = (v.as_py() for v in pc.min_max(raw).values())
    # Zone-less timestamps cast to text as "YYYY-MM-DD HH:MM:SS" plus, below a second, every digit of the unit
    # (".500000"); years past 9999 (and before 1) have more characters. ~20x faster than strftime, which looks the
    # zone up per value. With four-digit years the separator is the 11th byte, replaced in place (a search for it
    # cost 0.15 s per million values); whole seconds then take their "Z" at the 20th byte (a join: 0.1 s).
    four = low is None or (_FOUR_DIGIT_YEARS[0] * per <= low and high < _FOUR_DIGIT_YEARS[1] * per)
    if four:
        seconds = raw if unit == "s" else pc.divide(raw, scalar(per))  # truncated: whole where it gives raw back
        if unit == "s" or pc.all(pc.equal(pc.multiply(seconds, scalar(per)), raw)).as_py() is not False:
            text = seconds.cast(pa.timestamp("s")).cast(pa.string())
            text = pc.binary_replace_slice(text, start=19, stop=19, replacement="Z")
            return pc.binary_replace_slice(text, start=10, stop=11, replacement="T").cast(pa.large_string())
    text = raw.cast(pa.timestamp(unit)).cast(pa.string())
    if unit != "s":
        text = pc.ascii_rtrim(pc.ascii_rtrim(text, characters="0"), characters=".")
    text = (pc.binary_replace_slice(text, start=10, stop=11, replacement="T") if four else
            pc.replace_substring(text, pattern=" ", replacement="T", max_replacements=1)).cast(pa.large_string())
    zone, none = text_array(["Z", ""])  # Arrow scalars: a Python value would be converted by way of pandas
    return pc.binary_join_element_wise(text, zone, none)
