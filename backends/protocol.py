"""The engine protocol: everything a pipeline needs from a dataframe engine, and nothing more.

Tasks never see an engine: flows hand them Narwhals lazy frames that an engine produced and hand the
result back to the engine to write. Arrow is the exchange format at the edges (``from_arrow``/``to_arrow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import narwhals as nw
    import pyarrow as pa

    from lakehouse.backends.logs import LakeLog
    from lakehouse.contracts.catalog import TableSpec
    from lakehouse.contracts.landing import LandingEntity


class EngineError(RuntimeError):
    """An engine was asked for something it cannot do; the message names the engine and the alternative."""


@dataclass(frozen=True)
class Gap:
    """Something an engine does not do the way the protocol describes, declared rather than silent (narwhals'
    ``not_implemented``): the engine (and session kind), the operation, what happens instead, and what to use
    when it matters. ``Engine.gaps`` lists an engine's; docs/engines.md is the table of them all."""

    engine: str
    operation: str
    effect: str
    instead: str


class ContractViolation(ValueError):
    """Rows about to be written break their table's contract; nothing was written."""


class TableNotFoundError(LookupError):
    """A table (or a version of it) does not exist in the lake."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the table, the Delta version it produced, and how many rows it wrote."""

    table: str
    version: int
    rows: int
    # A merge's target files read and pruned by its predicate (keys plus the source's partition values); None
    # when the engine does not report them (Spark).
    files_scanned: int | None = None
    files_skipped: int | None = None


@dataclass(frozen=True)
class LandingRead:
    """Landing files of one entity read as text (``files`` are ``(path, label)`` pairs; the label is the
    path under the landing root, recorded as ``_source_file``).

    ``rows`` has every declared column of the entity as text, plus ``_source_file`` and ``_record_hash``.
    ``rejects`` (a frame of the engine, like ``rows``) are records that could not become rows (a ragged CSV row, a line that is not a JSON object, bytes
    that are not UTF-8), with the quarantine columns ``rule, reason, record, record_hash, source_file``.
    ``refused`` are whole files not read (unreadable, empty, a declared column missing or renamed):
    ``source_file, problem, reason`` (``backends.landing.REFUSED_SCHEMA``). ``records`` counts each read
    file's input records (rows + rejects).
    """

    rows: nw.LazyFrame
    rejects: nw.LazyFrame
    refused: pa.Table
    records: dict[str, int] = field(default_factory=dict)


class Engine(Protocol):
    name: str
    gaps: tuple[Gap, ...]  # what this engine does differently from the protocol (declared, tested)

    # ---- frames
    def from_arrow(self, table: pa.Table) -> nw.LazyFrame: ...
    def to_arrow(self, frame: nw.LazyFrame) -> pa.Table: ...
    def count(self, frame: nw.LazyFrame) -> int: ...
    def materialize(self, frame: nw.LazyFrame) -> nw.LazyFrame: ...
    # A part of rows materialised before (filtered, columns derived row by row), to be used several times: held
    # on its own where that frees the rest (Polars), recomputed from those rows where that costs less than
    # writing it again (Spark).
    def materialize_subset(self, frame: nw.LazyFrame) -> nw.LazyFrame: ...

    # ---- landing files
    def read_landing(self, entity: LandingEntity, files: Sequence[tuple[Path, str]]) -> LandingRead: ...

    # ---- Delta tables
    def exists(self, spec: TableSpec) -> bool: ...
    def scan(self, spec: TableSpec, *, version: int | None = None) -> nw.LazyFrame: ...
    def append(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult: ...
    def overwrite(self, spec: TableSpec, frame: nw.LazyFrame) -> WriteResult: ...
    def overwrite_partitions(self, spec: TableSpec, frame: nw.LazyFrame, *,
                             partitions: dict[str, list[Any]] | None = None) -> WriteResult: ...
    def merge(self, spec: TableSpec, frame: nw.LazyFrame, *, insert_only: bool = False) -> WriteResult: ...
    def replace_rows(self, spec: TableSpec, old: nw.LazyFrame, new: nw.LazyFrame) -> WriteResult: ...
    def scan_changes(self, spec: TableSpec, since: int) -> tuple[nw.LazyFrame, nw.LazyFrame]: ...
    def version(self, spec: TableSpec) -> int | None: ...
    def history(self, spec: TableSpec, *, limit: int = 10) -> list[dict[str, Any]]: ...

    # ---- the lake's logs that grow with the data (a replay's accepted records): read and appended by the engine
    def scan_log(self, log: LakeLog) -> nw.LazyFrame: ...
    def append_log(self, log: LakeLog, frame: nw.LazyFrame) -> None: ...
