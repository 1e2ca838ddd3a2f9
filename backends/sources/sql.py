"""SQL sources: the Snowflake operational warehouse (customers, orders, products) and Redshift (customer
behaviour, over the PostgreSQL wire protocol).

One query per extract selects the window's rows (``watermark >= lo AND watermark < hi``) in a total order
(the watermark, then every column), and streams them: Arrow batches from Snowflake (``fetch_arrow_batches``),
a server-side cursor from Redshift (``fetchmany``). Neither holds the table in memory. The cursor is the number
of rows of the window already landed: a resumed extract asks for the same ordered window from that offset.

For very large Redshift extracts, UNLOAD the same query to S3 as CSV and deliver the files to the landing
folder instead (docs/sources.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakehouse.backends.sources.extract import Piece, SourceError, Window
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from lakehouse.deployments.settings import RedshiftSettings, SnowflakeConnection

# The column each entity's window is taken on.
WATERMARKS = {"snowflake.customers": "updated_at", "snowflake.orders": "updated_at",
              "snowflake.products": "updated_at", "redshift.customer_behaviour": "extracted_at"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        msg = f"expected a table or schema name of letters, digits and underscores, got {name!r}"
        raise SourceError(msg)
    return name


@dataclass
class SqlConnector:
    """The query and its streaming shared by both SQL sources; each says how it connects and fetches."""

    entity: LandingEntity
    table: str  # schema-qualified
    batch_rows: int
    windowed = True

    @property
    def watermark(self) -> str:
        return WATERMARKS[self.entity.name]

    def _where(self, window: Window) -> tuple[str, list[Any]]:
        wm = self.watermark
        clauses, params = [f"{wm} < %s"], [window.hi.replace(tzinfo=None)]
        if window.lo is not None:
            clauses.insert(0, f"{wm} >= %s")
            params.insert(0, window.lo.replace(tzinfo=None))
        return " AND ".join(clauses), params

    def query(self, window: Window, offset: int) -> tuple[str, list[Any]]:
        where, params = self._where(window)
        columns = ", ".join(self.entity.column_names)
        order = ", ".join(f"{c} NULLS LAST" for c in [self.watermark, *self.entity.column_names])
        tail = f" LIMIT NULL OFFSET {offset}" if offset else ""
        return f"SELECT {columns} FROM {self.table} WHERE {where} ORDER BY {order}{tail}", params

    def pieces(self, window: Window, cursor: str | None) -> Iterator[Piece]:
        offset = int(cursor or 0)
        sql, params = self.query(window, offset)
        for batch in self._batches(sql, params):
            offset += batch.num_rows
            yield Piece(cursor=str(offset), rows=batch)

    def pending(self, window: Window, cursor: str | None) -> int | None:
        where, params = self._where(window)
        count = self._scalar(f"SELECT COUNT(*) FROM {self.table} WHERE {where}", params)
        return max(int(count) - int(cursor or 0), 0)

    def _batches(self, sql: str, params: list[Any]) -> Iterator[pa.Table]:
        raise NotImplementedError

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        raise NotImplementedError


class SnowflakeSource(SqlConnector):
    """Customers, orders and products from the operational Snowflake database (``sources.snowflake``)."""

    def __init__(self, entity: LandingEntity, settings: SnowflakeConnection, *, batch_rows: int) -> None:
        self.settings = settings.require("sources.snowflake")
        table = f"{_ident(settings.database)}.{_ident(settings.schema_)}.{entity.entity.upper()}"
        super().__init__(entity, table, batch_rows)

    def describe(self) -> str:
        s = self.settings
        return f"Snowflake {s.account} ({s.host or 'snowflakecomputing.com'}) table {self.table}"

    def _connect(self) -> Any:
        from lakehouse.backends.destinations.snowflake import connect
        from lakehouse.deployments.secrets import resolve_secret

        secret = resolve_secret(self.settings.secret, what="sources.snowflake.secret")
        return connect(self.settings, secret, create_schema=False)

    def _batches(self, sql: str, params: list[Any]) -> Iterator[pa.Table]:
        with closing(self._connect()) as conn:
            cur = conn.cursor()
            cur.execute(sql, params)
            for batch in cur.fetch_arrow_batches():
                for start in range(0, batch.num_rows, self.batch_rows):
                    yield batch.slice(start, self.batch_rows)

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        with closing(self._connect()) as conn:
            return conn.cursor().execute(sql, params).fetchone()[0]


class RedshiftSource(SqlConnector):
    """Customer behaviour from Redshift over the PostgreSQL wire protocol (``sources.redshift``)."""

    def __init__(self, entity: LandingEntity, settings: RedshiftSettings, *, batch_rows: int) -> None:
        self.settings = settings.require()
        super().__init__(entity, f"{_ident(settings.schema_)}.{_ident(entity.entity)}", batch_rows)

    def describe(self) -> str:
        s = self.settings
        return f"Redshift {s.host}:{s.port}/{s.database} table {self.table}"

    def _connect(self) -> Any:
        import psycopg

        from lakehouse.deployments.secrets import resolve_secret

        s = self.settings
        password = resolve_secret(s.secret, what="sources.redshift.secret").get_secret_value()
        try:
            return psycopg.connect(host=s.host, port=s.port, dbname=s.database, user=s.user, password=password,
                                   sslmode=s.sslmode, connect_timeout=s.connect_timeout,
                                   application_name="lakehouse-extract")
        except psycopg.OperationalError as exc:
            msg = f"could not connect to Redshift at {s.host}:{s.port}/{s.database} as {s.user}: {exc}"
            raise SourceError(msg) from None

    def _batches(self, sql: str, params: list[Any]) -> Iterator[pa.Table]:
        sql = sql.replace(" LIMIT NULL OFFSET ", " OFFSET ")
        with closing(self._connect()) as conn, conn.transaction(), conn.cursor(name="lakehouse_extract") as cur:
            cur.itersize = self.batch_rows
            cur.execute(sql, params)
            names = [d.name for d in cur.description]
            while rows := cur.fetchmany(self.batch_rows):
                columns = list(zip(*rows, strict=True))
                yield pa.table({n: pa.array(list(v)) for n, v in zip(names, columns, strict=True)})

    def _scalar(self, sql: str, params: list[Any]) -> Any:
        with closing(self._connect()) as conn:
            return conn.execute(sql, params).fetchone()[0]
