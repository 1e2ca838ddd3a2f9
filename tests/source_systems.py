"""Source systems for the connector tests, filled from generated landing files.

Each test takes one entity's generated rows per day and puts them where both paths can read them: as landing
files (the file path) and in the source system (the connector path), so that bronze can be compared row for row.
A typed source cannot hold every dirty value a file can (a quantity of ``"abc"`` in a NUMBER column): rows whose
text does not survive the source's types are left out of both paths (``representable``).

The CRM API and the FX vendor are played by ``ApiServer``: a real HTTP server on loopback, in a thread, that
serves pages, asks for a bearer token, rate-limits (429 with Retry-After) and fails now and then (503), and
can hold one request until a test lets it go (to kill an extract midway at a known point).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from lakehouse.backends.sources.extract import landing_text
from lakehouse.contracts.landing import LandingEntity


def day_rows(landing: Path, entity: LandingEntity, day: date) -> tuple[pl.DataFrame, list[str]]:
    """The generated rows of ``entity`` for ``day`` as text, and (JSON lines) the raw lines in order."""
    folder = landing / entity.source / entity.entity / day.isoformat()
    files = sorted(folder.glob(f"*{entity.suffix}"))
    if entity.format == "jsonl":
        lines = [line for f in files for line in f.read_text().splitlines()]
        parsed = []
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                parsed.append({c: obj.get(c) for c in entity.column_names})
        return pl.DataFrame(parsed, schema={c: pl.String for c in entity.column_names}), lines
    frames = [pl.read_csv(f, infer_schema=False) if entity.format == "csv" else pl.read_parquet(f) for f in files]
    # a file with a drifted schema (a renamed column) is refused by the file path; a source table cannot hold it
    frames = [_canonical(f.select(entity.column_names), entity) for f in frames
              if set(entity.column_names) <= set(f.columns)]
    return (pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.String for c in entity.column_names})), []


def _canonical(frame: pl.DataFrame, entity: LandingEntity) -> pl.DataFrame:
    """Typed Parquet columns and zoned timestamps (the generator's dialects) as the landing text of one instant:
    UTC ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``, what a source system's typed value reads back as."""
    def ts(value: Any) -> str | None:
        if value is None:
            return None
        moment = (value if isinstance(value, datetime) else datetime.fromisoformat(value)).astimezone(UTC)
        fraction = f"{moment.microsecond:06d}".rstrip("0")
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"

    kinds = {c.name: c.type for c in entity.columns}
    return pl.DataFrame({
        c: pl.Series(c, [ts(v) for v in frame.get_column(c).to_list()], dtype=pl.String) if kinds[c] == "timestamp"
        else frame.get_column(c).cast(pl.String) for c in frame.columns})


def _scale(values: pl.Series) -> int:
    for v in values.drop_nulls():
        if "." in v:
            return len(v.split(".", 1)[1])
    return 0


def typed(frame: pl.DataFrame, entity: LandingEntity, scales: dict[str, int]) -> pa.Table:
    """``frame``'s text parsed into the source's types (None where a value does not parse)."""
    def parse(column: str, kind: str, value: str | None) -> Any:
        if value is None:
            return None
        try:
            if kind == "integer":
                return int(value)
            if kind == "decimal":
                return Decimal(value).quantize(Decimal(1).scaleb(-scales[column]))
            if kind == "date":
                return date.fromisoformat(value)
            if kind == "timestamp":
                return datetime.fromisoformat(value).astimezone(UTC)
        except (ValueError, InvalidOperation):
            return None
        return value

    arrays = {}
    for c in entity.columns:
        values = [parse(c.name, c.type, v) for v in frame.get_column(c.name).to_list()]
        kind = {"integer": pa.int64(), "decimal": pa.decimal128(18, scales.get(c.name, 0)), "date": pa.date32(),
                "timestamp": pa.timestamp("us", tz="UTC")}.get(c.type, pa.string())
        arrays[c.name] = pa.array(values, type=kind)
    return pa.table(arrays)


def representable(frame: pl.DataFrame, entity: LandingEntity) -> tuple[pl.DataFrame, pa.Table]:
    """The rows of ``frame`` whose every value survives the source's types, as text and as typed rows."""
    scales = {c.name: _scale(frame.get_column(c.name)) for c in entity.columns if c.type == "decimal"}
    rows = typed(frame, entity, scales)
    back = pl.from_arrow(landing_text(rows, entity))
    same = pl.all_horizontal([back.get_column(c).eq_missing(frame.get_column(c)) for c in entity.column_names])
    keep = frame.with_columns(_ok=same).get_column("_ok")
    return frame.filter(keep), rows.filter(pa.array(keep.to_list(), type=pa.bool_()))


def write_landing(landing: Path, entity: LandingEntity, day: date, frame: pl.DataFrame | None = None,
                  lines: list[str] | None = None) -> Path:
    """The file path's input: ``frame`` (or raw ``lines``) as one landing file of ``day``."""
    folder = landing / entity.source / entity.entity / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"delivered{entity.suffix}"
    if lines is not None:
        path.write_text("".join(f"{line}\n" for line in lines))
    elif entity.format == "csv":
        frame.write_csv(path, include_header=True, null_value="", line_terminator="\n", quote_style="necessary")
    elif entity.format == "parquet":
        frame.write_parquet(path)
    else:
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in frame.to_dicts()))
    return path


# ---------------------------------------------------------------------------------------------- HTTP APIs
class ApiServer:
    """The CRM search API and the FX vendor's rates API on one loopback port (see the module docstring).

    ``records[object]``: CRM records (``{"id", "properties"}``) the search serves; ``rates[day]``: the vendor's
    document for a day (absent: 404). ``throttle_every``: every n-th request gets a 429 with ``Retry-After``;
    ``fail_every``: every n-th a 503; ``hold_request``: the n-th request (from 1) waits on ``release`` before it
    is answered (``held`` is set when it arrives)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.rates: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.answered_at: list[float] = []  # time.monotonic() of each answer, in the order of ``requests``
        self.throttle_every = 0
        self.fail_every = 0
        self.retry_after = "1"
        self.hold_request: int | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self._count = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # str: raw JSON
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                with server._lock:
                    server.requests.append((self.command, self.path, status))
                    server.answered_at.append(time.monotonic())

            def _gate(self) -> bool:
                with server._lock:
                    server._count += 1
                    n = server._count
                if n == server.hold_request:
                    server.held.set()
                    server.release.wait(60)
                if server.throttle_every and n % server.throttle_every == 0:
                    self._send(429, {"message": "rate limited"}, {"Retry-After": server.retry_after})
                    return False
                if server.fail_every and n % server.fail_every == 0:
                    self._send(503, {"message": "try again"})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._gate():
                    return
                if not self.path.startswith("/v1/rates/"):
                    self._send(404, {"message": "no such endpoint"})
                    return
                doc = server.rates.get(self.path.rsplit("/", 1)[1])
                self._send(200, doc) if doc else self._send(404, {"message": "no rates for that day"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._send(401, {"message": "authentication credentials not found"})
                    return
                if not self._gate():
                    return
                parts = self.path.strip("/").split("/")  # crm/v3/objects/<object>/search
                records = server.records.get(parts[3], [])
                filters = body["filterGroups"][0]["filters"]
                prop = filters[0]["propertyName"]

                def millis(r: dict[str, Any]) -> int:
                    text = r["properties"][prop]
                    return int(datetime.fromisoformat(text).timestamp() * 1000)

                chosen = [r for r in records if all(
                    (millis(r) >= int(f["value"])) if f["operator"] == "GTE" else (millis(r) < int(f["value"]))
                    for f in filters)]
                chosen.sort(key=lambda r: (millis(r), int(r["id"])))
                start, limit = int(body.get("after", 0)), int(body["limit"])
                page = chosen[start:start + limit]
                nxt = {"paging": {"next": {"after": str(start + limit)}}} if start + limit < len(chosen) else {}
                results = [{"id": r["id"], "properties": {k: r["properties"].get(k) for k in body["properties"]},
                            "updatedAt": r["properties"][prop]} for r in page]
                self._send(200, {"total": len(chosen), "results": results, **nxt})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------- both paths
class TwoPaths:
    """One entity landed two ways into two lakes: by files (``files``) and by its connector (``connector``)."""

    def __init__(self, tmp: Path, *, connector_landing: str | None = None, engine: dict[str, str] | None = None) -> None:
        """``connector_landing``: where the connector lands instead of a local folder (``s3://bucket/prefix``);
        ``engine``: the settings of the engine both paths run on (default: the laptop engine)."""
        self.tmp, self.connector_landing, self.engine = tmp, connector_landing, engine or {}
        for which in ("files", "connector"):
            (tmp / which / "landing").mkdir(parents=True, exist_ok=True)

    def landing(self, which: str) -> Any:
        from lakehouse.backends.storage import root_path

        if which == "connector" and self.connector_landing:
            return root_path(self.connector_landing)
        return self.tmp / which / "landing"

    def lake(self, which: str) -> Path:
        return self.tmp / which / "lake"

    def ctx(self, which: str, day: date) -> Any:
        from lakehouse.tasks.context import RunContext

        return RunContext(env="local", run_date=day, run_id=f"{which}-{day}", started_at=datetime.now(UTC),
                          overrides={"lake_root": str(self.lake(which)), "landing_root": str(self.landing(which)),
                                     **self.engine})

    def run_files(self, name: str, day: date) -> dict[str, Any]:
        from lakehouse.tasks.bronze import ingest_entity

        return ingest_entity.fn(self.ctx("files", day), name)

    def extract(self, name: str, day: date) -> dict[str, Any]:
        from lakehouse.tasks.extract import extract_entity

        return extract_entity.fn(self.ctx("connector", day), name)

    def run_connector(self, name: str, day: date) -> tuple[dict[str, Any], dict[str, Any]]:
        from lakehouse.tasks.bronze import ingest_entity

        pulled = self.extract(name, day)
        return pulled, ingest_entity.fn(self.ctx("connector", day), name)

    def bronze(self, which: str, entity: LandingEntity) -> pl.DataFrame:
        """The bronze rows: the entity's columns, the record hash and the ingest date, sorted."""
        from deltalake import DeltaTable

        from lakehouse.contracts.catalog import bronze_for

        path = self.lake(which) / bronze_for(entity).path
        cols = [*entity.column_names, "_record_hash", "_ingest_date"]
        return pl.from_arrow(DeltaTable(str(path)).to_pyarrow_table(columns=cols)).sort(cols, nulls_last=True)

    def quarantined(self, which: str, entity: LandingEntity) -> list[tuple]:
        from deltalake import DeltaTable

        from lakehouse.contracts.catalog import bronze_for, quarantine_for

        path = self.lake(which) / quarantine_for(bronze_for(entity)).path
        if not (path / "_delta_log").is_dir():
            return []
        rows = DeltaTable(str(path)).to_pyarrow_table(columns=["rule", "record", "run_date"]).to_pylist()
        return sorted((r["rule"], r["record"], r["run_date"]) for r in rows)
