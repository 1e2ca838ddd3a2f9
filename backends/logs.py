"""Reading and appending the lake's own logs (declared in contracts/logs.py): one generic reader/appender.

``lake_log(lake, "refused", source="crm", entity="accounts")`` is that log's instance; ``rows()`` reads it in
its declared order, ``append(rows)`` adds rows in one Delta commit with the declared schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakehouse.backends.lake import Lake
from lakehouse.contracts.catalog import table
from lakehouse.contracts.logs import LogSpec, log

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class LakeLog:
    """One instance of a lake log at ``path`` under ``lake``'s root."""

    lake: Lake
    spec: LogSpec
    path: str

    @property
    def uri(self) -> str:
        return self.lake.path_uri(self.path)

    def exists(self) -> bool:
        return self.lake.log_table(self.path) is not None

    def table(self) -> pa.Table | None:
        """The whole log as Arrow (None: never written)."""
        return self.lake.read_log(self.path)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in the log's declared order."""
        return sorted(self.lake.log_rows(self.path), key=lambda r: tuple(r.get(c) for c in self.spec.order_by))

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` in one commit, with the declared schema (a missing column is null)."""
        from lakehouse.backends.arrow_rows import arrow_table

        self.lake.append_log(self.path, arrow_table(rows, self.spec.schema))


def lake_log(lake: Lake, name: str, **fields: str) -> LakeLog:
    """Log ``name`` of ``lake`` for one instance (``fields`` fill its path: layer, source, entity, table)."""
    spec = log(name)
    return LakeLog(lake, spec, spec.at(**fields))


def refused_log(lake: Lake, source: str, entity: str) -> LakeLog:
    """Where refused landing files of ``source``.``entity`` are recorded (each run that refuses one appends a row)."""
    return lake_log(lake, "refused", source=source, entity=entity)


def replay_log(lake: Lake, table_name: str) -> LakeLog:
    """The quarantined records of silver table ``table_name`` a replay has accepted (tasks/replay.py)."""
    return lake_log(lake, "replays", entity=table(table_name).entity)
