"""fakesnow's Snowflake server (the real snowflake-connector-python talks to it over HTTP) on loopback.

fakesnow 0.12.1 emulates ``MERGE`` with a temporary table, and records a (here empty) comment of every table
it creates in its own global database. DuckDB lets one transaction write one database only, so a ``MERGE``
inside ``BEGIN .. COMMIT`` after another write failed with "a single transaction can only write to a single
attached database". This launcher skips the bookkeeping of empty comments and changes nothing else: with it,
DELETE + MERGE + INSERT commit or roll back together, as on Snowflake.

    python -m lakehouse.testing.fakesnow_server --port 8000
"""

from __future__ import annotations

import argparse
import sys

import fakesnow
from fakesnow import info_schema

_record_comment = info_schema.insert_table_comment_sql


def _record_real_comments_only(catalog: str, schema: str, table: str, comment: str | None) -> str:
    return "SELECT 1" if comment is None else _record_comment(catalog, schema, table, comment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    info_schema.insert_table_comment_sql = _record_real_comments_only
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fakesnow.server(port=args.port, host="127.0.0.1"):
        print(f"fakesnow server on 127.0.0.1:{args.port}", flush=True)
        stop.wait()


if __name__ == "__main__":
    sys.exit(main())
