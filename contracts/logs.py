"""The lake's own logs, declared once beside the tables: name, path under the lake root, schema, keys.

Each log is a Delta table created and written with delta-rs whichever engine writes the data tables (lake
metadata, like ``_delta_log``), except the one that grows with the data: a replay's accepted records
(``replays``) are read and appended by the engine (``Engine.scan_log``/``append_log``; on Spark, by its tasks).
Every append is one atomic commit and a log only grows. ``backends/logs.py`` reads and
appends any of them; nothing else builds a log's path. Besides the logs, the lake holds three kinds of plain
objects, named here too: the run lock's lease (``_locks``), Prefect's task results (``_results``) and the
OpenLineage event files (``_lineage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from lakehouse.contracts.types import BOOL, DATE, FLOAT64, INT64, STRING, UTC_TS, DType, list_of

if TYPE_CHECKING:
    import pyarrow as pa

Field = tuple[str, DType] | tuple[str, DType, bool]  # name, type, nullable (default True)


@dataclass(frozen=True)
class LogSpec:
    """One lake log. ``path`` is a template whose ``{fields}`` name the log's instance (the layer, the landing
    entity, the table); ``keys`` identify a row; ``order_by`` is the order rows are read in."""

    name: str
    path: str
    columns: tuple[Field, ...]
    keys: tuple[str, ...]
    order_by: tuple[str, ...]
    description: str

    @cached_property
    def schema(self) -> pa.Schema:
        """The log's Arrow schema (what it is written with)."""
        import pyarrow as pa

        return pa.schema([pa.field(f[0], f[1].arrow(), nullable=f[2] if len(f) > 2 else True)  # type: ignore[misc]
                          for f in self.columns])

    def at(self, **fields: str) -> str:
        """The log's path relative to the lake root for one instance (``at(source="fx", entity="rates")``)."""
        try:
            return self.path.format(**fields)
        except KeyError as missing:
            msg = f"expected {self.name} log fields {self.fields()}, got {sorted(fields)} (missing {missing})"
            raise ValueError(msg) from None

    def fields(self) -> list[str]:
        import string

        return [f for _, f, _, _ in string.Formatter().parse(self.path) if f]


def _schema(*fields: Field) -> tuple[Field, ...]:
    return fields


REQUIRED = False  # the third item of a field: nullable=False

LOGS: dict[str, LogSpec] = {log.name: log for log in (
    LogSpec("releases", "_releases/{layer}", _schema(
        ("release_id", STRING, REQUIRED), ("seq", INT64, REQUIRED), ("table", STRING, REQUIRED),
        ("version", INT64, REQUIRED), ("run_id", STRING, REQUIRED), ("run_date", DATE, REQUIRED),
        ("released_at", UTC_TS, REQUIRED)),
        keys=("seq", "table"), order_by=("seq", "table"),
        description="Which Delta version of each table of a layer readers see: one row per table per release; "
        "the release with the highest seq is current."),
    LogSpec("ledger", "_ledger/runs", _schema(
        ("run_id", STRING, REQUIRED), ("flow", STRING, REQUIRED), ("task", STRING, REQUIRED),
        ("task_run_id", STRING, REQUIRED), ("table", STRING), ("run_date", DATE, REQUIRED),
        ("versions_read", STRING, REQUIRED),  # JSON {table: version or null}
        ("version_written", INT64), ("rows_in", INT64), ("rows_out", INT64),
        ("rows_quarantined", INT64), ("status", STRING, REQUIRED),  # completed | failed
        ("error", STRING), ("started_at", UTC_TS, REQUIRED), ("duration_s", FLOAT64, REQUIRED),
        ("engine", STRING, REQUIRED),
        ("level", STRING, REQUIRED),  # task: one data task run | run: a daily run that finished its date
        # A run row's own facts: the release it made, when it took the run lock (= started_at), whether it was
        # forced, and the daily entities it was allowed to go without (a backfill runs the date again once they
        # arrive). Null on task rows.
        ("release_id", STRING), ("locked_at", UTC_TS), ("forced", BOOL), ("missing", list_of(STRING))),
        keys=("task_run_id", "started_at"), order_by=("started_at", "task"),
        description="The run log: one row per data task run (versions read and written, rows in/out/quarantined, "
        "status, duration) and one row per daily run that finished a date (its release, lock time, what it went "
        "without; a backfill skips the dates it holds)."),
    LogSpec("checkpoints", "_checkpoints/{source}/{entity}", _schema(
        ("seq", INT64, REQUIRED), ("files", list_of(STRING), REQUIRED),
        ("lines", list_of(INT64), REQUIRED),  # lines per file: the batch's offsets
        ("rows", INT64, REQUIRED), ("quarantined", INT64, REQUIRED),
        ("bronze_version", INT64, REQUIRED), ("recovered", BOOL, REQUIRED),
        ("run_id", STRING, REQUIRED), ("run_date", DATE, REQUIRED), ("committed_at", UTC_TS, REQUIRED)),
        keys=("seq",), order_by=("seq",),
        description="A stream's micro-batch files bronze has applied, one row per bronze commit."),
    LogSpec("extracts", "_extracts/{source}/{entity}", _schema(
        ("run_date", DATE, REQUIRED), ("seq", INT64, REQUIRED),
        ("file", STRING),  # null on the row that closes a date, and for a piece whose rows were all known
        ("rows", INT64, REQUIRED),
        ("dropped", INT64, REQUIRED),  # rows of the lookback that bronze already held
        ("cursor", STRING), ("window_from", UTC_TS), ("window_to", UTC_TS), ("done", BOOL, REQUIRED),
        ("note", STRING), ("run_id", STRING, REQUIRED), ("written_at", UTC_TS, REQUIRED)),
        keys=("run_date", "seq"), order_by=("run_date", "seq"),
        description="A source connector's extract state: the window, each landed piece and its cursor."),
    LogSpec("refused", "_refused/{source}/{entity}", _schema(
        ("source_file", STRING), ("problem", STRING), ("reason", STRING), ("run_id", STRING),
        ("run_date", DATE), ("refused_at", UTC_TS)),
        keys=("source_file", "run_id"), order_by=("refused_at",),
        description="Landing files refused whole, with the reason; each run that refuses one appends a row."),
    LogSpec("deliveries", "_deliveries/{source}/{entity}", _schema(
        ("source_file", STRING), ("records", INT64), ("run_id", STRING), ("run_date", DATE),
        ("ingested_at", UTC_TS)),
        keys=("source_file", "run_id"), order_by=("ingested_at",),
        description="Every landing file read into bronze with its records (0: an empty 'no changes' delivery, "
        "which counts for freshness)."),
    LogSpec("conformed", "_conformed/{entity}", _schema(
        ("source_file", STRING), ("run_id", STRING), ("run_date", DATE), ("conformed_at", UTC_TS),
        ("inputs", STRING),
        ("version_before", INT64)),  # the silver table's version before the conform (-1: it did not exist)
        keys=("source_file", "run_id"), order_by=("conformed_at",),
        description="Each conform of a date's bronze files into a silver table, with the digest of its inputs."),
    LogSpec("replays", "_replays/{entity}", _schema(
        ("record_hash", STRING, REQUIRED), ("rule", STRING, REQUIRED), ("replay_id", STRING, REQUIRED),
        ("replayed_at", UTC_TS, REQUIRED)),
        keys=("record_hash",), order_by=("replayed_at",),
        description="Quarantined records a replay accepted into a silver table (never fed again)."),
    LogSpec("builds", "_builds/{table}", _schema(
        ("table_version", INT64), ("inputs", STRING), ("code", STRING), ("run_id", STRING),
        ("built_at", UTC_TS)),
        keys=("table_version",), order_by=("built_at",),
        description="Each build of a gold table built per key (gold.dim_customer): the version written and the "
        "input versions read, so the next build continues from it."),
)}

LOCKS = "_locks"  # the run lock's lease: one JSON object per lock (backends/run_lock.py)
RESULTS = "_results"  # Prefect's stored task results, when no other result storage is set (tasks/caching.py)
LINEAGE = "_lineage"  # OpenLineage run events, one JSON-lines file per task run (tasks/tracking.py)


def log(name: str) -> LogSpec:
    """The declaration of lake log ``name``; a clear error lists the known logs otherwise."""
    try:
        return LOGS[name]
    except KeyError:
        msg = f"expected a lake log name, got {name!r}; known logs: {', '.join(sorted(LOGS))}"
        raise KeyError(msg) from None
