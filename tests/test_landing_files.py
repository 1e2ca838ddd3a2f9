"""The input boundary: a corpus of damaged landing files, each derived from a valid generated day, read on both
engines. Every file is read or refused with the expected reason, every bad record quarantined with the expected
rule and its raw bytes, input records = bronze rows + quarantined rows per file, and both engines give the same
bronze rows."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lakehouse.backends import Lake, get_backend
from lakehouse.backends.landing import list_folder
from lakehouse.contracts.expressions import record_digest
from lakehouse.contracts.landing import FILE_RULES, RECORD_RULES, landing_entity
from lakehouse.deployments.settings import SparkSettings

DAY = date(2026, 11, 1)
ACCOUNTS, EVENTS, CUSTOMERS = (landing_entity(n) for n in ("crm.accounts", "kafka.order_events", "snowflake.customers"))


@pytest.fixture(scope="module")
def valid_day(tmp_path_factory) -> Path:
    """One generated day (scale 0.03, seed 7, as the daily flow tests): the valid files every damaged file is
    derived from."""
    from lakehouse.backends.sources.sample import generate

    out = tmp_path_factory.mktemp("valid-day")
    generate(out, days=1, scale=0.03, seed=7, start=DAY)
    return out


@pytest.fixture(scope="module", params=["polars", "sail"])
def engine(request, tmp_path_factory):
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    if request.param == "sail":
        return get_backend("spark", lake, SparkSettings(remote=request.getfixturevalue("sail_url")))
    return get_backend("polars", lake)


def valid_file(day: Path, entity) -> Path:
    folder = day / entity.source / entity.entity / DAY.isoformat()
    return min(p for p in folder.iterdir() if p.name.endswith(entity.suffix))


def csv_lines(day: Path) -> tuple[str, list[str]]:
    header, *rows = valid_file(day, ACCOUNTS).read_text().splitlines()
    assert '"' not in "".join(rows)  # the derivations below rely on an unquoted export
    return header, rows


def json_lines(day: Path) -> list[str]:
    """The valid JSON lines of the day's first micro-batch file (the generator's own dirt removed)."""
    lines = valid_file(day, EVENTS).read_text().splitlines()
    return [line for line in lines if line.startswith("{") and _is_object(line)]


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@dataclass
class Case:
    """A damaged delivery: the files it lands (name -> bytes), derived from the valid day, and what must
    come of it: refused files (name -> problem), quarantined rules, and the bronze rows by key column."""

    entity: Any
    files: Callable[[Path], dict[str, bytes]]
    refused: dict[str, str] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    keys: Callable[[Path], list[str]] | None = None  # expected bronze key values (sorted), None: the valid file's


def _csv(header: str, rows: list[str], *, end: str = "\n") -> bytes:
    return (header + end + end.join(rows) + end).encode()


def _with_csv(change: Callable[[str, list[str]], bytes]) -> Callable[[Path], dict[str, bytes]]:
    return lambda day: {"accounts_export.csv": change(*csv_lines(day))}


def _ids(rows: list[str]) -> list[str]:
    return sorted(r.split(",")[0] for r in rows)


def _except(*positions: int) -> Callable[[Path], list[str]]:
    return lambda day: _ids([r for i, r in enumerate(csv_lines(day)[1]) if i not in positions])


def _set(rows: list[str], i: int, column: int, value: str) -> list[str]:
    fields = rows[i].split(",")
    fields[column] = value
    return [*rows[:i], ",".join(fields), *rows[i + 1:]]


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _valid_parquet(day: Path) -> bytes:
    return valid_file(day, CUSTOMERS).read_bytes()


def _customer_ids(day: Path) -> list[str]:
    return sorted(pq.read_table(valid_file(day, CUSTOMERS)).column("customer_id").to_pylist())


def _event_line(i: int) -> str:
    """One of 3,000 order events (~300 KB, decoded in several blocks) with, here and there, what must not be
    taken for a plain line or must still be one: padding, a bracket or brace inside a string, an escaped NUL."""
    status = {300: "pla\\u0000ced", 500: "a[b", 600: "a{b}", 700: "NaN"}.get(i, "placed")
    line = (f'{{"event_id": "E{i:05d}", "order_id": "O{i}", "event_type": "created", "status": "{status}", '
            f'"event_ts": "2026-11-01T00:00:00Z"}}')
    return {100: "  " + line, 200: line + " \t", 2999: line + "\r"}.get(i, line)


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- CSV rows
    "ragged rows": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, [r[0].rsplit(",", 1)[0], r[1] + ",extra", *r[2:]])),
                        rules={"parse.field_count": 2}, keys=_except(0, 1)),
    "unmatched quote": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, _set(r, 3, 1, '"' + r[3].split(",")[1]))),
                            rules={"parse.unmatched_quote": 1}, keys=_except(3)),
    "latin-1 bytes": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, r).replace(
        r[2].encode(), ",".join(_set(r, 2, 4, "Jürgen Müller")[2].split(",")).encode("latin-1"))),
        rules={"encoding.invalid_utf8": 1}, keys=_except(2)),
    "NUL byte": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, _set(r, 4, 1, "Acme\x00Corp"))),
                     rules={"encoding.nul_byte": 1}, keys=_except(4)),
    "10 MB field": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, _set(r, 5, 1, "x" * (10 << 20)))),
                        rules={"parse.record_too_large": 1}, keys=_except(5)),
    "lone CR inside a field": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, _set(r, 0, 1, "Acme\rCorp")))),
    "BOM + CRLF": Case(ACCOUNTS, _with_csv(lambda h, r: b"\xef\xbb\xbf" + _csv(h, r, end="\r\n"))),
    "formula-like values": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h, _set(_set(_set(r, 0, 1, "=HYPERLINK(\"x\")"),
                                                                              1, 4, "+1 555"), 2, 3, "@SUM(A1)")))),
    "type drift in a CSV column": Case(landing_entity("redshift.customer_behaviour"), lambda day: {
        "customer_behaviour.csv": valid_file(day, landing_entity("redshift.customer_behaviour")).read_bytes()
        .replace(b"\n", b"\nC9999999,2026-11-01,lots,1,1,1,2026-11-01T09:30:00Z\n", 1)},
        keys=lambda day: sorted([*(r["customer_id"] for r in csv.DictReader(io.StringIO(valid_file(
            day, landing_entity("redshift.customer_behaviour")).read_text()))), "C9999999"])),
    # ---------------------------------------------------------------- CSV files
    "renamed column": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h.replace("domain", "web_domain"), r)),
                           refused={"accounts_export.csv": "schema.missing_column"}, keys=lambda day: []),
    "duplicate header": Case(ACCOUNTS, _with_csv(lambda h, r: _csv(h + ",domain", [x + ",dup.com" for x in r])),
                             refused={"accounts_export.csv": "schema.duplicate_column"}, keys=lambda day: []),
    "empty CSV": Case(ACCOUNTS, lambda day: {"accounts_export.csv": b""},
                      refused={"accounts_export.csv": "file.empty"}, keys=lambda day: []),
    "header only": Case(ACCOUNTS, _with_csv(lambda h, r: (h + "\n").encode()), keys=lambda day: []),
    "200,000 columns": Case(ACCOUNTS, lambda day: {"accounts_export.csv": (",".join(
        f"c{i}" for i in range(200_000)) + "\n1\n").encode()},
        refused={"accounts_export.csv": "file.too_many_columns"}, keys=lambda day: []),
    "gzip named .csv": Case(ACCOUNTS, lambda day: {"accounts_export.csv": gzip.compress(valid_file(day, ACCOUNTS)
                                                                                        .read_bytes())}),
    "csv.gz and csv.zst": Case(ACCOUNTS, lambda day: {
        "accounts.csv.gz": gzip.compress(_csv(*csv_lines(day))), "accounts.csv.zst": _zstd(_csv(*csv_lines(day)))},
        keys=lambda day: sorted(_ids(csv_lines(day)[1]) * 2)),
    "broken gzip": Case(ACCOUNTS, lambda day: {"accounts.csv.gz": gzip.compress(_csv(*csv_lines(day)))[:-40]},
                        refused={"accounts.csv.gz": "file.unreadable"}, keys=lambda day: []),
    "a glob in the name": Case(ACCOUNTS, lambda day: {
        "accounts_export*.csv": _csv(csv_lines(day)[0], csv_lines(day)[1][:3]),
        "accounts_export_2.csv": _csv(csv_lines(day)[0], csv_lines(day)[1][3:])}),
    "brackets and a space in the name": Case(ACCOUNTS, lambda day: {"accounts_export [1].csv": _csv(*csv_lines(day))}),
    "another extension": Case(ACCOUNTS, lambda day: {"accounts.xlsx": b"PK\x03\x04", "accounts_export.csv":
                                                     _csv(*csv_lines(day)), "_SUCCESS": b"", ".DS_Store": b"\x00"},
                              refused={"accounts.xlsx": "file.extension"}),
    # ---------------------------------------------------------------- JSON lines
    "JSON damage": Case(EVENTS, lambda day: {"batch-0001.jsonl": "\n".join([
        *json_lines(day)[:20],
        json_lines(day)[20][:-12],  # truncated
        "[" * 5000 + "]" * 5000,  # deep
        '{"event_id": ' + "[" * 5000 + "]" * 5000 + "}",
        "[1, 2, 3]", '"just text"',  # not an object
        json_lines(day)[21].replace('"placed"', "NaN"), json_lines(day)[22].replace('"placed"', "Infinity"),
        json_lines(day)[23].replace('"placed"', "1e309"),
        json_lines(day)[24].replace("placed", "pla\x01ced"),  # a raw control character
        json_lines(day)[25].replace('"event_type"', '"event_type": {"a": 1}, "x"'),
        json_lines(day)[26][:-1] + ', "event_id": "again"}',  # a key twice
        "", "   ",  # blank lines are not records
    ]).encode() + b"\n" + json_lines(day)[27].replace("placed", "plac\u00e9").encode("latin-1") + b"\n"},
        rules={"parse.malformed_json": 2, "parse.too_deep": 2, "parse.not_an_object": 2,
               "parse.nonfinite_number": 3, "parse.nested_value": 1, "parse.duplicate_key": 1,
               "encoding.invalid_utf8": 1},
        keys=lambda day: sorted(json.loads(x)["event_id"] for x in json_lines(day)[:20])),
    "JSON numbers and booleans as text": Case(EVENTS, lambda day: {"batch-0001.jsonl": (
        b'{"event_id": 17, "order_id": 1.50, "event_type": true, "status": null, "event_ts": "2026-11-01T00:00:00Z"}\n'
        b'{"event_id": "E1", "order_id": "O1", "event_type": "created", "status": "placed", "event_ts": "t"}\n'
    )}, keys=lambda day: ["17", "E1"]),
    "JSON lines in several blocks: CRLF, padding, brackets and braces in text, a NUL": Case(
        EVENTS, lambda day: {"batch-0001.jsonl": "\r\n".join(_event_line(i) for i in range(3000)).encode()},
        rules={"encoding.nul_byte": 1}, keys=lambda day: [f"E{i:05d}" for i in range(3000) if i != 300]),
    "empty JSON lines file": Case(EVENTS, lambda day: {"batch-0001.jsonl": b""}, keys=lambda day: []),
    # ---------------------------------------------------------------- Parquet
    "not Parquet": Case(CUSTOMERS, lambda day: {"customers.parquet": b"customer_id,email\nC1,a@b.c\n"},
                        refused={"customers.parquet": "file.unreadable"}, keys=lambda day: []),
    "truncated Parquet": Case(CUSTOMERS, lambda day: {"customers.parquet": _valid_parquet(day)[:-100]},
                              refused={"customers.parquet": "file.unreadable"}, keys=lambda day: []),
    "empty Parquet": Case(CUSTOMERS, lambda day: {"customers.parquet": b""},
                          refused={"customers.parquet": "file.empty"}, keys=lambda day: []),
    "Parquet .gz": Case(CUSTOMERS, lambda day: {"customers.parquet.gz": gzip.compress(_valid_parquet(day))},
                        keys=_customer_ids),
}


def land(case: Case, day: Path, root: Path) -> tuple[list[tuple[Path, str]], list[dict], list[str]]:
    """Write the case's files into the entity's date folder under ``root``; the folder listing's files to read,
    files refused by name, and files ignored."""
    e = case.entity
    folder = root / e.source / e.entity / DAY.isoformat()
    folder.mkdir(parents=True)
    for name, data in case.files(day).items():
        (folder / name).write_bytes(data)
    listed = list_folder(e, folder, root)
    return listed.files, listed.refused, listed.ignored


@pytest.mark.parametrize("name", list(CASES))
def test_every_damaged_file_is_read_or_refused_with_its_reason(name, engine, valid_day, tmp_path):
    case = CASES[name]
    e = case.entity
    files, refused_by_name, ignored = land(case, valid_day, tmp_path / "landing")
    read = engine.read_landing(e, files)
    rows, rejects = engine.to_arrow(read.rows).to_pylist(), engine.to_arrow(read.rejects)
    refused = {r["source_file"].rsplit("/", 1)[1]: r["problem"] for r in [*refused_by_name, *read.refused.to_pylist()]}
    assert refused == case.refused
    assert all(problem in FILE_RULES for problem in refused.values())
    assert dict(Counter(rejects.column("rule").to_pylist())) == case.rules
    assert all(rule in RECORD_RULES for rule in case.rules)
    key = e.column_names[0]
    expected = case.keys(valid_day) if case.keys else _default_keys(e, valid_day)
    assert sorted(r[key] for r in rows) == expected
    # input records = bronze rows + quarantined, per file; refused files contribute nothing
    per_file = Counter(r["_source_file"] for r in rows) + Counter(rejects.column("source_file").to_pylist())
    assert {k: v for k, v in read.records.items() if v} == dict(per_file)
    assert not set(refused) & {label.rsplit("/", 1)[1] for label in read.records}
    assert all(r["_record_hash"] == record_digest([r[c] for c in e.column_names]) for r in rows)
    for reject in rejects.to_pylist():  # the raw record is kept and hashed, never empty
        assert reject["record"] and reject["record_hash"] == record_digest([reject["record"]])
    if name == "another extension":
        assert sorted(label.rsplit("/", 1)[1] for label in ignored) == [".DS_Store", "_SUCCESS"]


def test_damaged_files_on_s3_are_read_and_refused_as_from_a_local_folder(engine, valid_day, aws, monkeypatch, tmp_path,
                                                                         request):
    """Every case of the corpus, landed in a local folder and under an ``s3://`` landing root (moto): the same
    listing (read, refused by name, ignored), the same rows, rejects, refusals and record counts, labelled alike.
    On Spark the files are read by Sail's tasks, whose server reaches moto's S3 as executors reach S3."""
    import boto3

    from lakehouse.backends.storage import root_path

    if engine.name == "spark":
        engine = get_backend("spark", engine.lake, SparkSettings(remote=request.getfixturevalue("sail_s3_url")))

    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="landing-corpus")
    for i, case in enumerate(CASES.values()):
        local_root = tmp_path / f"case-{i}"
        land(case, valid_day, local_root)
        for f in local_root.rglob("*"):
            if f.is_file():
                s3.upload_file(str(f), "landing-corpus", f"{i}/landing/{f.relative_to(local_root).as_posix()}")
        e = case.entity
        remote_root = root_path(f"s3://landing-corpus/{i}/landing")
        reads = []
        for root in (local_root, remote_root):
            listed = list_folder(e, e.folder(root, DAY), root)
            read = engine.read_landing(e, listed.files)
            reads.append(([label for _, label in listed.files], listed.refused, listed.ignored,
                          engine.to_arrow(read.rows).sort_by("_record_hash").to_pylist(),
                          engine.to_arrow(read.rejects).sort_by([("source_file", "ascending"),
                                                                 ("record_hash", "ascending")]).to_pylist(),
                          read.refused.to_pylist(), read.records))
        assert reads[0] == reads[1], case
        assert reads[1][0] or reads[1][1], case  # something was listed under the S3 root


def _default_keys(entity, day: Path) -> list[str]:
    if entity is ACCOUNTS:
        return _ids(csv_lines(day)[1])
    raise AssertionError(f"no default keys for {entity.name}")


def test_a_blocks_plain_lines_are_decoded_in_bulk_and_only_the_others_line_by_line(monkeypatch, tmp_path):
    """The decoder both engines run (Spark's in its tasks): of the 3,000-line file, the five lines that are not
    plainly flat objects (padding, a bracket, a brace or NaN inside a string) go the line-by-line way; CRLF ends
    do not, and all the other lines (2,994 rows and the NUL reject) come from one bulk decode. Were the bulk
    input cut wrong, its decode would fail and fall back to halves down to single lines: many more."""
    from lakehouse.backends import landing

    one_by_one: list[str] = []
    decode = landing._json_line
    monkeypatch.setattr(landing, "_json_line", lambda line, out: (one_by_one.append(json.loads(line)["event_id"]),
                                                                   decode(line, out)))
    path = tmp_path / "batch-0001.jsonl"
    path.write_bytes("\r\n".join(_event_line(i) for i in range(3000)).encode())
    read = landing.read_files(EVENTS, [(path, "batch-0001.jsonl")])
    assert sorted(one_by_one) == ["E00100", "E00200", "E00500", "E00600", "E00700"]
    assert sorted(read.rows.column("event_id").to_pylist()) == [f"E{i:05d}" for i in range(3000) if i != 300]
    assert read.rejects.column("rule").to_pylist() == ["encoding.nul_byte"]


@pytest.mark.parametrize("bad", [None, 5])
def test_the_plain_lines_of_several_files_are_decoded_by_one_call(bad, monkeypatch, tmp_path):
    """Eight stream files read together: their plain lines go to Arrow's decoder in one call, not one per file.
    Where a file holds a plain-looking line Arrow refuses (``bad``: a lone surrogate's escape), the call fails
    and the files are decoded again in halves: the other files' lines still go in bulk and only that file's
    lines one by one, and each file keeps its own rows and records."""
    import pyarrow.json as pa_json

    from lakehouse.backends import landing

    calls: list[int] = []
    one_by_one: list[str] = []
    read_json, decode = pa_json.read_json, landing._json_line

    def counted(source, **options):
        table = read_json(source, **options)
        calls.append(table.num_rows)
        return table

    monkeypatch.setattr(landing.pa_json, "read_json", counted)
    monkeypatch.setattr(landing, "_json_line", lambda line, out: (one_by_one.append(line), decode(line, out)))
    files = []
    for f in range(8):
        lines = [f'{{"event_id": "E{f}-{i}", "order_id": "O{i}", "status": "placed"}}' for i in range(100)]
        if f == bad:
            lines[50] = '{"event_id": "E5-50", "order_id": "\\ud800", "status": "placed"}'
        (tmp_path / f"batch-{f:04d}.jsonl").write_text("\n".join(lines) + "\n")
        files.append((tmp_path / f"batch-{f:04d}.jsonl", f"batch-{f:04d}.jsonl"))
    read = landing.read_files(EVENTS, files)
    assert read.records == {label: 100 for _, label in files}
    ids = read.rows.column("event_id").to_pylist()
    assert sorted(ids) == sorted(f"E{f}-{i}" for f in range(8) for i in range(100) if (f, i) != (bad, 50))
    if bad is None:
        assert calls == [800] and one_by_one == []
    else:
        assert read.rejects.column("rule").to_pylist() == ["encoding.invalid_utf8"]
        # Decoded: files 0-3, then 4, then file 5's first half and last quarter, then files 6-7. Its quarter
        # holding the bad line (25 lines, fewer than 33) was decoded one line at a time.
        assert calls == [400, 100, 50, 25, 200]
        assert len(one_by_one) == 25 and all(b'"E5-' in line for line in one_by_one)


def test_a_defect_in_a_joined_decode_fails_the_read_instead_of_refusing_the_file_being_read(monkeypatch, tmp_path):
    """The decode of several files' lines runs while the next file is read (once they reach the limit). Should
    it fail for a reason no file causes (a defect), the read fails naming the files, rather than the file being
    read taken for unreadable and the earlier file kept without its rows."""

    from lakehouse.backends import landing
    from lakehouse.contracts.landing import READ_LIMITS

    files = []
    for f in range(2):
        lines = [f'{{"event_id": "E{f}-{i}", "order_id": "O{i}", "status": "placed"}}' for i in range(100)]
        (tmp_path / f"batch-{f:04d}.jsonl").write_text("\n".join(lines) + "\n")
        files.append((tmp_path / f"batch-{f:04d}.jsonl", f"batch-{f:04d}.jsonl"))
    size = (tmp_path / "batch-0000.jsonl").stat().st_size
    limits = dataclasses.replace(READ_LIMITS, json_chunk_bytes=size * 3 // 2)  # decoded while file 2 is read
    assert sum(landing.read_files(EVENTS, files, limits=limits).records.values()) == 200

    def broken(out, data, table):
        raise ValueError("a defect")

    monkeypatch.setattr(landing, "_keep_decoded", broken)
    with pytest.raises(RuntimeError, match=r"batch-0000\.jsonl.*batch-0001\.jsonl.*a defect"):
        landing.read_files(EVENTS, files, limits=limits)


def test_a_spark_task_reads_its_json_lines_files_by_one_call_and_tags_each_row_with_its_file(monkeypatch, tmp_path):
    """What a Spark task runs (``backends/spark/landing.py``), called in process on the indices of 11 files:
    JSON-lines files are read eight per call of the shared reader (so their lines are decoded together), and
    every row, reject and outcome names the file it came from by its index; a refused file still gets its
    outcome. CSV and Parquet files stay one per call (a task holds one file's rows at a time)."""
    import pyarrow as pa

    from lakehouse.backends import landing
    from lakehouse.backends.spark import landing as on_tasks

    calls: list[list[str]] = []
    read_files = landing.read_files
    monkeypatch.setattr(landing, "read_files", lambda entity, files: (calls.append([label for _, label in files]),
                                                                       read_files(entity, files))[1])
    files = []
    for f in range(11):
        body = "\n".join(f'{{"event_id": "E{f}-{i}", "order_id": "O{i}", "status": "placed"}}' for i in range(f + 1))
        if f == 4:
            body += '\n{"event_id": "E4-x", "order_id": "\\ud800"}'  # a reject of file 4
        data = gzip.compress(body.encode())[:-8] if f == 9 else body.encode()  # file 9: cut short, refused
        (tmp_path / f"batch-{f:02d}.jsonl").write_bytes(data)
        files.append((str(tmp_path / f"batch-{f:02d}.jsonl"), f"batch-{f:02d}.jsonl"))
    schema = on_tasks.output_schema(EVENTS)
    read = on_tasks._reader(EVENTS, files, schema, on_tasks.files_per_call(EVENTS))
    out = pa.Table.from_batches(list(read(iter([pa.record_batch([pa.array(range(11), pa.int64())], ["id"])]))))
    assert on_tasks.FILES_PER_TASK == 8 and [len(c) for c in calls] == [8, 3]
    by_kind = {k: out.filter(pc.equal(out["_kind"], k)).to_pylist() for k in ("row", "reject", "outcome")}
    assert all(files[r["_file"]][1] == r["_source_file"] for kind in by_kind.values() for r in kind)
    assert sorted(r["event_id"] for r in by_kind["row"]) == sorted(
        f"E{f}-{i}" for f in range(11) if f != 9 for i in range(f + 1))
    assert [(r["_file"], r["_rule"]) for r in by_kind["reject"]] == [(4, "encoding.invalid_utf8")]
    outcomes = {r["_file"]: (r["_records"], r["_problem"]) for r in by_kind["outcome"]}
    assert outcomes == {f: (None, "file.unreadable") if f == 9 else (f + 1 + (f == 4), None) for f in range(11)}

    assert on_tasks.files_per_call(ACCOUNTS) == 1 and on_tasks.files_per_call(CUSTOMERS) == 1


def test_spark_spreads_json_lines_files_eight_to_a_task_and_other_files_one_to_a_task(sail_url, valid_day, tmp_path):
    """On a real Spark (Sail) the tasks ``read_on_tasks`` plans: the 11 files of a stream folder go to two tasks
    (at most eight each; Spark spreads them five and six), so each task's files are read by one call; the
    Parquet files of an entity of another format go one to a task."""
    from pyspark.sql.connect import functions as F

    from lakehouse.backends.spark import landing as on_tasks
    from lakehouse.backends.spark.engine import _ddl
    from lakehouse.backends.spark.session import session_for

    spark, _ = session_for(SparkSettings(remote=sail_url))

    def files_per_task(entity, files) -> list[int]:
        out = on_tasks.read_on_tasks(spark, entity, files, _ddl(on_tasks.output_schema(entity)))
        outcomes = out.filter(F.col("_kind") == on_tasks.OUTCOME).select(F.spark_partition_id().alias("task"))
        return sorted(r["n"] for r in outcomes.groupBy("task").agg(F.count("*").alias("n")).collect())

    assert files_per_task(EVENTS, _stream_files(valid_day, tmp_path / "events")) == [5, 6]
    customers = []
    for f in range(3):
        path = tmp_path / f"customers-{f}.parquet"
        path.write_bytes(valid_file(valid_day, CUSTOMERS).read_bytes())
        customers.append((path, path.name))
    assert files_per_task(CUSTOMERS, customers) == [1, 1, 1]


def _stream_files(day: Path, folder: Path) -> list[tuple[Path, str]]:
    """A stream's micro-batch folder of small files: six valid ones, one whose plain-looking line is not UTF-8
    (Arrow refuses the lines it is decoded with), one with an escaped NUL, one with a bracket line and padding,
    one empty and one gzip file cut short (refused)."""
    lines = json_lines(day)
    folder.mkdir(parents=True)
    parts = {f"batch-{i:04d}.jsonl": "\n".join(lines[i::6]).encode() + b"\n" for i in range(6)}
    parts["batch-0006.jsonl"] = "\n".join(lines[:5]).encode() + b'\n{"event_id": "E\xff1", "order_id": "O1"}\n'
    parts["batch-0007.jsonl"] = "\n".join(_event_line(i) for i in range(280, 320)).encode()
    parts["batch-0008.jsonl"] = "\r\n".join(_event_line(i) for i in range(480, 720)).encode()
    parts["batch-0009.jsonl"] = b""
    parts["batch-0010.jsonl.gz"] = gzip.compress(("\n".join(lines * 20) + "\n").encode())[:-60]
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    return [(folder / name, name) for name in sorted(parts)]


def _ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _outcome(read, to_arrow) -> tuple:
    """A read's rows, rejects and refusals, each in a set order, and its record counts."""
    return (_ordered(to_arrow(read.rows).to_pylist()), _ordered(to_arrow(read.rejects).to_pylist()),
            _ordered(read.refused.to_pylist()), read.records)


def test_a_stream_folder_read_in_one_call_gives_each_engine_the_same_rows(engine, valid_day, tmp_path):
    """The same micro-batch folder (damaged files among small valid ones) read in one call on each engine (on
    Polars by one reader call, on Spark eight files per call of the reader in a task): every file's rows,
    rejects, refusal and record count as read one file at a time."""
    files = _stream_files(valid_day, tmp_path / "events")
    together = _outcome(engine.read_landing(EVENTS, files), engine.to_arrow)
    one_by_one = [_outcome(engine.read_landing(EVENTS, [f]), engine.to_arrow) for f in files]
    assert together[:3] == tuple(_ordered([x for o in one_by_one for x in o[i]]) for i in range(3))
    assert together[3] == {k: v for o in one_by_one for k, v in o[3].items()}
    assert len(together[0]) == len(json_lines(valid_day)) + 5 + 39 + 240
    assert {r["source_file"]: r["problem"] for r in together[2]} == {"batch-0010.jsonl.gz": "file.unreadable"}
    assert Counter(r["rule"] for r in together[1]) == {"encoding.invalid_utf8": 1, "encoding.nul_byte": 1}


def test_raw_bytes_are_kept_escaped_and_values_exactly_as_sent(engine, valid_day, tmp_path):
    header, rows = csv_lines(valid_day)
    damaged = _set(_set(rows, 0, 1, "Acme\rCorp"), 1, 1, "=HYPERLINK(\"http://x\")")
    latin = ",".join(_set(rows, 2, 4, "Jürgen")[2].split(",")).encode("latin-1")
    data = _csv(header, damaged).replace(rows[2].encode(), latin)
    case = Case(ACCOUNTS, lambda day: {"accounts_export.csv": data})
    files, _, _ = land(case, valid_day, tmp_path / "landing")
    read = engine.read_landing(ACCOUNTS, files)
    by_id = {r["account_id"]: r for r in engine.to_arrow(read.rows).to_pylist()}
    first, second = rows[0].split(",")[0], rows[1].split(",")[0]
    assert by_id[first]["account_name"] == "Acme\rCorp"
    assert by_id[second]["account_name"] == '=HYPERLINK("http://x")'  # bronze is raw: neutralised only for people
    [reject] = engine.to_arrow(read.rejects).to_pylist()
    assert reject["record"] == latin.decode("latin-1").replace("ü", "\\xfc")


ACCOUNTS_HEADER = "account_id,account_name,domain,industry,owner_name,country,updated_at"


def _account_line(i: int) -> str:
    return f"A{i:06d},Acme {i},acme{i}.com,{'' if i % 7 else 'Retail'},Morgan Diaz,US,2026-10-31T10:00:{i % 60:02d}Z"


def _csv_rows(data: bytes) -> list[dict[str, str | None]]:
    """The rows Python's csv module reads from ``data`` (an accounts export), an empty field as null."""
    header, *rows = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    return [{c: (r[header.index(c)] or None) for c in ACCOUNTS.column_names} for r in rows if r]


def test_a_plain_csv_is_read_in_bulk_with_the_rows_and_rejects_of_the_line_reader(engine, tmp_path):
    """A CRLF export with a BOM, its columns in another order with one not declared, 3,000 records of which
    six in seven have an empty field, two blank lines and two lines of another width: no line holds a quote, so
    it is read in blocks by Arrow's kernels (backends/landing.py ``_plain_block``) on each engine, with the rows,
    nulls, rejects and record count the line-by-line reader gives."""
    order = ["country", "account_id", "extra", *[c for c in ACCOUNTS.column_names if c not in ("country", "account_id")]]
    lines = []
    for i in range(3000):
        values = dict(zip(ACCOUNTS.column_names, _account_line(i).split(","), strict=True), extra=f"x{i}")
        lines.append(",".join(values[c] for c in order))
    lines[10], lines[2000] = "", ""
    lines[20], lines[2500] = lines[20] + ",too,wide", "A002500,narrow"
    data = b"\xef\xbb\xbf" + ("\r\n".join([",".join(order), *lines]) + "\r\n").encode()
    files, _, _ = land(Case(ACCOUNTS, lambda day: {"accounts_export.csv": data}), tmp_path, tmp_path / "landing")
    read = engine.read_landing(ACCOUNTS, files)
    rows = engine.to_arrow(read.rows).sort_by("account_id").to_pylist()
    expected = [r for r in _csv_rows(data.replace(lines[20].encode(), b"").replace(b"A002500,narrow", b""))]
    assert [{c: r[c] for c in ACCOUNTS.column_names} for r in rows] == expected
    kept = [i for i in range(3000) if i not in (10, 20, 2000, 2500)]
    assert len(rows) == 2996 and sum(r["industry"] is None for r in rows) == sum(1 for i in kept if i % 7)
    rejects = engine.to_arrow(read.rejects).sort_by("record").to_pylist()
    assert [(r["rule"], r["record"], r["reason"]) for r in rejects] == [
        ("parse.field_count", "A002500,narrow", "expected 8 fields (the header's), got 2"),
        ("parse.field_count", lines[20], "expected 8 fields (the header's), got 10")]
    assert list(read.records.values()) == [2998]


def test_a_csv_is_read_in_bulk_until_a_block_holds_a_line_that_is_not_plain(monkeypatch, tmp_path):
    """Read in blocks of 4 KiB: the blocks before the one holding a quoted record (its quoted field holds a
    comma and a line break) go in bulk, none of their rows by the line reader; from that block's first line
    on, every record goes line by line. The rows are what Python's csv module reads, in the file's order."""
    from lakehouse.backends import landing
    from lakehouse.contracts.landing import READ_LIMITS

    by_line: list[str] = []
    row = landing._FileOut.row
    monkeypatch.setattr(landing._FileOut, "row", lambda self, values, record: (by_line.append(values[0]),
                                                                                row(self, values, record)))
    lines = [_account_line(i) for i in range(2000)]
    lines[1500] = 'A001500,"Acme, Inc.\r\nEurope",acme.com,Retail,,US,2026-10-31T10:00:00Z'
    data = ("\r\n".join([ACCOUNTS_HEADER, *lines]) + "\r\n").encode()
    path = tmp_path / "accounts_export.csv"
    path.write_bytes(data)
    limits = dataclasses.replace(READ_LIMITS, json_chunk_bytes=4096)
    read = landing.read_files(ACCOUNTS, [(path, path.name)], limits=limits)
    assert [{c: r[c] for c in ACCOUNTS.column_names} for r in read.rows.to_pylist()] == _csv_rows(data)
    assert read.rows.column("account_name")[1500].as_py() == "Acme, Inc.\r\nEurope"
    first = int(by_line[0][1:])
    assert 1440 < first <= 1500 and by_line == [f"A{i:06d}" for i in range(first, 2000)]
    assert read.rejects.num_rows == 0 and read.records == {path.name: 2000}


def test_typed_parquet_gives_the_text_a_csv_would_carry(engine, tmp_path):
    """Typed columns (what a warehouse unload writes) become the canonical text: UTC timestamps with a Z,
    fractions without trailing zeros, a naive timestamp taken as UTC, dates, decimals with their scale."""
    kolkata = pa.timestamp("us", "Asia/Kolkata")
    table = pa.table({
        "customer_id": pa.array(["C1", "C2", "C3"]).dictionary_encode(),
        "email": ["a@x.com", "b@x.com", "c@x.com"],
        "phone": pa.array([4915112345, None, 7], pa.int64()),
        "first_name": ["A", "B", "C"], "last_name": pa.array([Decimal("12.50"), Decimal("0.00"), None],
                                                            pa.decimal128(10, 2)),
        "country": [True, False, None],
        "signup_date": [date(2026, 1, 31), date(1999, 12, 31), None],
        "updated_at": pa.array([datetime(2026, 11, 1, 4, 0), datetime(2026, 11, 1, 9, 30, 0, 123000),
                                datetime(1969, 12, 31, 23, 59, 59, 500000)], pa.timestamp("ns")),
    })
    zoned = table.set_column(7, "updated_at", pa.array([datetime(2026, 11, 1, 4, 0)] * 3, pa.timestamp("us", "UTC"))
                             .cast(kolkata))
    case = Case(CUSTOMERS, lambda day: {"typed.parquet": _parquet(table), "zoned.parquet": _parquet(zoned)})
    files, _, _ = land(case, Path("."), tmp_path / "landing")
    read = engine.read_landing(CUSTOMERS, files)
    rows = sorted(engine.to_arrow(read.rows).to_pylist(), key=lambda r: (r["_source_file"], r["customer_id"]))
    got = [(r["customer_id"], r["phone"], r["last_name"], r["country"], r["signup_date"], r["updated_at"])
           for r in rows]
    assert got == [
        ("C1", "4915112345", "12.50", "true", "2026-01-31", "2026-11-01T04:00:00Z"),
        ("C2", None, "0.00", "false", "1999-12-31", "2026-11-01T09:30:00.123Z"),
        ("C3", "7", None, None, None, "1969-12-31T23:59:59.5Z"),
        ("C1", "4915112345", "12.50", "true", "2026-01-31", "2026-11-01T04:00:00Z"),
        ("C2", None, "0.00", "false", "1999-12-31", "2026-11-01T04:00:00Z"),
        ("C3", "7", None, None, None, "2026-11-01T04:00:00Z"),
    ]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_typed_parquet_timestamps_give_the_same_text_in_whole_seconds_with_fractions_and_past_four_digit_years(
        engine, tmp_path, unit):
    """A file of whole seconds and one with fractions (the text is built two ways), and years of more or fewer
    than four digits (where the date part has another width), in every unit a writer may use."""
    whole = [datetime(2026, 11, 1, 4, 0), None, datetime(1969, 12, 31, 23, 59, 59), datetime(2262, 4, 11)]
    parts = [datetime(2026, 11, 1, 4, 0, 0, 500000), datetime(1970, 1, 1), None, datetime(1969, 12, 31, 23, 59, 59, 999000)]
    wide = pa.array([253_402_300_801, -62_135_596_801, 0], pa.int64())  # 10000-01-01T00:00:01, 0000-12-31T23:59:59
    per = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    columns = {
        "whole.parquet": pa.array(whole, pa.timestamp("us")).cast(pa.timestamp(unit)),
    }
    if unit != "s":
        columns["parts.parquet"] = pa.array(parts, pa.timestamp("us")).cast(pa.timestamp(unit))
    if unit != "ns":  # nanoseconds since 1970 reach only the years 1677-2262
        columns["wide.parquet"] = pc.multiply(wide, per).cast(pa.timestamp(unit, "UTC"))
    ids = [f"C{i}" for i in range(4)]
    tables = {name: pa.table({**{c: pa.array(ids[:len(col)]) for c in CUSTOMERS.column_names}, "updated_at": col})
              for name, col in columns.items()}
    case = Case(CUSTOMERS, lambda day: {name: _parquet(t) for name, t in tables.items()})
    files, _, _ = land(case, Path("."), tmp_path / "landing")
    rows = engine.to_arrow(engine.read_landing(CUSTOMERS, files).rows).to_pylist()
    got = {(r["_source_file"].rsplit("/", 1)[1], r["customer_id"]): r["updated_at"] for r in rows}
    expected = {
        ("whole.parquet", "C0"): "2026-11-01T04:00:00Z", ("whole.parquet", "C1"): None,
        ("whole.parquet", "C2"): "1969-12-31T23:59:59Z", ("whole.parquet", "C3"): "2262-04-11T00:00:00Z",
    }
    if unit != "s":
        expected |= {("parts.parquet", "C0"): "2026-11-01T04:00:00.5Z", ("parts.parquet", "C1"): "1970-01-01T00:00:00Z",
                     ("parts.parquet", "C2"): None, ("parts.parquet", "C3"): "1969-12-31T23:59:59.999Z"}
    if unit != "ns":
        expected |= {("wide.parquet", "C0"): "10000-01-01T00:00:01Z", ("wide.parquet", "C1"): "0000-12-31T23:59:59Z",
                     ("wide.parquet", "C2"): "1970-01-01T00:00:00Z"}
    assert got == expected


def test_parquet_rows_that_cannot_be_text_are_quarantined_not_their_file(engine, tmp_path):
    table = pa.table({c: pa.array(["x", "y", "z"]) for c in CUSTOMERS.column_names})
    table = table.set_column(4, "last_name", pa.array([1.5, float("nan"), float("inf")]))
    case = Case(CUSTOMERS, lambda day: {"customers.parquet": _parquet(table)})
    files, _, _ = land(case, Path("."), tmp_path / "landing")
    read = engine.read_landing(CUSTOMERS, files)
    assert [r["last_name"] for r in engine.to_arrow(read.rows).to_pylist()] == ["1.5"]
    assert engine.to_arrow(read.rejects).column("rule").to_pylist() == ["parse.nonfinite_number"] * 2
    assert read.records == {"snowflake/customers/2026-11-01/customers.parquet": 3}


def test_parquet_text_holding_a_nul_is_quarantined_in_any_batch_and_column_encoding(engine, tmp_path):
    """A NUL in a Parquet text value (in a row group past the first, in a plain, a dictionary-encoded and a
    string-view column) makes its row a reject; the other rows, whose values share the same value buffers, are
    read as they are."""
    names = CUSTOMERS.column_names
    rows = 600_000  # more than one read batch (256k rows)
    email = pa.array([f"c{i}@x.io" if i != 300_001 else "c\x00@x.io" for i in range(rows)], pa.large_string())
    last = pa.array(["Doe" if i != 599_999 else "D\x00e" for i in range(rows)]).dictionary_encode()
    first = pa.array(["Ann" if i != 5 else "A\x00n" for i in range(rows)], pa.string_view())
    table = pa.table({c: pa.array([f"C{i:07d}" for i in range(rows)]) if c == "customer_id" else
                      email if c == "email" else last if c == "last_name" else first if c == "first_name" else
                      pa.nulls(rows, pa.string()) for c in names})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=100_000)
    case = Case(CUSTOMERS, lambda day: {"customers.parquet": sink.getvalue()})
    files, _, _ = land(case, Path("."), tmp_path / "landing")
    read = engine.read_landing(CUSTOMERS, files)
    kept = engine.to_arrow(read.rows).column("customer_id")
    assert kept.length() == rows - 3
    assert pc.sum(pc.is_in(kept, pa.array(["C0000005", "C0300001", "C0599999"]))).as_py() == 0
    rejects = engine.to_arrow(read.rejects).to_pylist()
    assert [r["rule"] for r in rejects] == ["encoding.nul_byte"] * 3
    assert sorted(json.loads(r["record"])["customer_id"] for r in rejects) == ["C0000005", "C0300001", "C0599999"]
    assert list(read.records.values()) == [rows]


def test_the_nul_search_covers_a_slices_own_value_bytes():
    """A text column is searched value by value only when its own value bytes hold a NUL: a slice sharing its
    buffer with a NUL outside its range (as a file's rows sliced from a joined decode do) is not, a NUL inside it
    is found in either offset width, and a column of another layout is always searched value by value."""
    from lakehouse.backends import landing

    for kind in (pa.string(), pa.large_string()):
        shared = pa.array(["a\x00", "bb", "cc", None, "d\x00"], kind)
        assert landing._may_hold_nul(pa.chunked_array([shared.slice(1, 3)])) is False
        assert landing._may_hold_nul(pa.chunked_array([shared.slice(1, 4)])) is True
        assert landing._may_hold_nul(pa.chunked_array([shared.slice(0, 1)])) is True
        assert landing._may_hold_nul(pa.chunked_array([shared.slice(2, 0), pa.nulls(2, kind)])) is False
    assert landing._may_hold_nul(pa.chunked_array([pa.array(["ok"], pa.string_view())])) is True


# ------------------------------------------------------------------------------------ a whole day, through the CLI
@pytest.fixture(params=["polars", "sail"])
def cli_engine(request) -> list[str]:
    return [] if request.param == "polars" else ["--backend", "spark", "--spark-remote",
                                                 request.getfixturevalue("sail_url")]


HOSTILE = "[/bold] [link=http://evil.example]click[/link] \x1b[2J\x1b]8;;http://x\x07"


def test_a_day_with_damaged_files_runs_names_every_refusal_and_prints_data_inert(
        cli_engine, prefect_harness, valid_day, tmp_path):
    """The rest of the day goes on around refused files and quarantined records; the run's summary, the refused
    log, 'quarantine list', 'quarantine show', 'show' and the report name them, and data cannot drive the
    terminal (markup, hyperlinks, escape sequences) or a spreadsheet (formulas)."""
    import shutil

    from typer.testing import CliRunner

    from lakehouse.flows.cli import app
    from lakehouse.flows.report import render

    runner = CliRunner()
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    shutil.copytree(valid_day, landing)
    accounts = landing / "crm" / "accounts" / DAY.isoformat()
    header, rows = csv_lines(valid_day)
    (accounts / "accounts_export.csv").write_bytes(_csv(header, [*rows, f"A9999999,{HOSTILE},x",
                                                                 "A9999997,Evil\x1b[2J Corp,,,,,2026-11-01T09:30:00Z",
                                                                 "A9999998,Bad Date Ltd,,,,,01/11/2026 09:30"]))
    behaviour = landing / "redshift" / "customer_behaviour" / DAY.isoformat() / "customer_behaviour.csv"
    behaviour.write_bytes(behaviour.read_bytes() + b"C9999999,2026-11-01,lots,1,1,1,2026-11-01T09:30:00Z\n")
    (accounts / "=cmd [x].csv").write_bytes(_csv(header.replace("domain", "web_domain"), rows))
    (accounts / "notes.txt").write_bytes(b"not a delivery")
    customers = landing / "snowflake" / "customers" / DAY.isoformat()
    (customers / "late.parquet").write_bytes(_valid_parquet(valid_day)[:-200])

    result = runner.invoke(app, ["run", "--date", DAY.isoformat(), "--lake-root", str(lake), "--landing",
                                 str(landing), *cli_engine])
    assert result.exit_code == 0, result.output
    for name in ("=cmd [x].csv", "notes.txt", "late.parquet"):
        assert f"refused crm/accounts/2026-11-01/{name}" in result.output or \
            f"refused snowflake/customers/2026-11-01/{name}" in result.output

    from lakehouse.backends import Lake
    from lakehouse.backends.logs import refused_log

    log = {r["source_file"].rsplit("/", 1)[1]: r["problem"] for entity in ("accounts", "customers")
           for r in refused_log(Lake(str(lake)), "crm" if entity == "accounts" else "snowflake", entity).rows()}
    assert log == {"=cmd [x].csv": "schema.missing_column", "notes.txt": "file.extension",
                   "late.parquet": "file.unreadable"}

    listed = runner.invoke(app, ["quarantine", "list", "--lake-root", str(lake)])
    assert listed.exit_code == 0, listed.output
    assert "parse.field_count" in listed.output and "=cmd [x].csv" in listed.output
    shown = runner.invoke(app, ["quarantine", "show", "bronze.crm.accounts", "--lake-root", str(lake)])
    assert shown.exit_code == 0, shown.output
    # the record column, its folded lines joined
    flat = "".join(line.split("│")[-2].strip() for line in shown.output.splitlines() if line.count("│") > 2)
    assert "[/bold] [link=http://evil.example]click[/link]".replace(" ", "") in flat.replace(" ", "")
    assert "\\x1b[2J" in flat and "\x1b" not in shown.output and "\x07" not in shown.output
    table = runner.invoke(app, ["show", "bronze.crm.accounts", "--columns", "account_id,account_name", "--limit", "10000", "--lake-root", str(lake)])
    assert table.exit_code == 0 and "Evil\\x1b[2J Corp" in table.output and "\x1b" not in table.output

    # bad date formats and type drift are read into bronze as sent, and quarantined by silver's type rules
    from deltalake import DeltaTable

    def silver_rules(entity: str) -> dict[str, str]:
        rows = DeltaTable(str(lake / "quarantine" / "silver" / entity)).to_pyarrow_table().to_pylist()
        return {r["rule"]: r["record"] for r in rows if "9999999" in r["record"] or "9999998" in r["record"]}

    assert list(silver_rules("accounts")) == ["type.invalid_updated_at"]
    assert list(silver_rules("customer_behaviour")) == ["type.invalid_sessions"]

    page = render(Lake(str(lake)), DAY)
    assert "=cmd [x].csv" in page and "schema.missing_column" in page and "file.unreadable" in page


def test_a_failed_run_prints_one_message_and_no_traceback(cli_engine, prefect_harness, valid_day, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    landing = tmp_path / "landing"
    shutil.copytree(valid_day, landing)
    import pyarrow.parquet as pq

    for f in (landing / "snowflake" / "customers" / DAY.isoformat()).iterdir():
        # a "no changes" delivery: every order now names a customer never delivered, so the silver gate stops
        pq.write_table(pq.read_schema(f).empty_table(), f)
    result = CliRunner().invoke(app, ["run", "--date", DAY.isoformat(), "--lake-root", str(tmp_path / "lake"),
                                      "--landing", str(landing), *cli_engine])
    assert result.exit_code == 1
    assert "error: run of 2026-11-01 failed: silver gate failed" in " ".join(result.output.split())
    assert "ref.unknown_customer" in result.output and "Traceback" not in result.output


def test_values_for_people_are_escaped_for_terminals_and_inert_for_spreadsheets():
    from lakehouse.flows.display import inert, plain, terminal

    assert plain("a\x1b[2Jb\r\nc\u202e") == "a\\x1b[2Jb\\r\\nc\\u202e"
    assert terminal("[/bold]").plain == "[/bold]" and not terminal("[bold]x[/bold]").spans
    assert [inert(v) for v in ("=1+2", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "ok", "a=b")] == [
        "'=1+2", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "ok", "a=b"]


def _typed_orders(text: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The orders whose values a warehouse unload could type (the generator's dirt left out), as text and as
    typed columns: timestamps (UTC, microseconds), a decimal price, an integer quantity."""
    # the generator's unload is typed already: first its text, as a CSV export of the same rows carries it
    text = pa.table({name: pa.array([None if v is None else v.strftime("%Y-%m-%dT%H:%M:%SZ")
                                     if isinstance(v, datetime) else str(v) for v in text[name].to_pylist()],
                                    pa.string()) for name in text.column_names})
    keep = []
    for i, r in enumerate(text.to_pylist()):
        try:
            ok = (str(int(r["quantity"])) == r["quantity"] and str(Decimal(r["unit_price"])) == r["unit_price"]
                  and all(datetime.strptime(r[c], "%Y-%m-%dT%H:%M:%SZ") for c in ("order_ts", "updated_at")))
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        if ok and Decimal(r["unit_price"]).as_tuple().exponent == -2:
            keep.append(i)
    plain = text.take(pa.array(keep, pa.int64()))
    typed = plain.set_column(plain.schema.get_field_index("quantity"), "quantity",
                             plain["quantity"].cast(pa.int64()))
    typed = typed.set_column(typed.schema.get_field_index("unit_price"), "unit_price",
                             pa.array([Decimal(v) for v in plain["unit_price"].to_pylist()], pa.decimal128(12, 2)))
    for c in ("order_ts", "updated_at"):
        stamps = [datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ") for v in plain[c].to_pylist()]
        typed = typed.set_column(typed.schema.get_field_index(c), c, pa.array(stamps, pa.timestamp("us", "UTC")))
    return plain, typed


def _content(root: Path, name: str) -> list[str]:
    """A table's rows as sorted JSON, without what differs between two runs (run ids, ingest times)."""
    from deltalake import DeltaTable

    from lakehouse.contracts.catalog import TABLES

    path = root / TABLES[name].path
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist() if (path / "_delta_log").is_dir() else []
    varying = {"_run_id", "_ingested_at", "run_id"}
    return sorted(json.dumps({k: v for k, v in r.items() if k not in varying}, sort_keys=True, default=str)
                  for r in rows)


def test_typed_parquet_gives_the_same_bronze_silver_and_gold_as_text(cli_engine, prefect_harness, valid_day,
                                                                      tmp_path):
    """The day's orders landed once as text (what a CSV carries) and once as a typed Parquet unload: the two
    lakes hold the same bronze, silver and gold rows."""
    import shutil

    from lakehouse.contracts.catalog import tables
    from lakehouse.flows.daily import daily_lakehouse

    kwargs = {} if not cli_engine else {"backend": "spark", "spark_remote": cli_engine[-1]}
    orders = valid_file(valid_day, landing_entity("snowflake.orders"))
    plain, typed = _typed_orders(pq.read_table(orders))
    assert typed.num_rows > 100 and pa.types.is_timestamp(typed.schema.field("order_ts").type)
    lakes = {}
    for kind, table in (("text", plain), ("typed", typed)):
        landing = tmp_path / kind / "landing"
        shutil.copytree(valid_day, landing)
        pq.write_table(table, landing / orders.relative_to(valid_day))
        lakes[kind] = tmp_path / kind / "lake"
        daily_lakehouse(run_date=DAY, lake_root=str(lakes[kind]), landing_root=str(landing), **kwargs)
    names = ["bronze.snowflake.orders", *(s.name for s in tables("silver")), *(s.name for s in tables("gold"))]
    for name in names:
        assert _content(lakes["text"], name) == _content(lakes["typed"], name), name
    assert _content(lakes["typed"], "gold.fact_orders")


@pytest.mark.parametrize("name", ["crm.accounts", "kafka.order_events", "snowflake.customers"])
def test_the_one_landing_writer_writes_what_the_reader_reads_back_and_leaves_no_temporary_file(tmp_path, name):
    import polars as pl

    from lakehouse.backends.landing import read_files
    from lakehouse.backends.sources.landing_writer import write_landing_file

    entity = landing_entity(name)
    values = {c: [f"{c}-1", None, 'a "quoted", value'] for c in entity.column_names}
    frame = pl.DataFrame(values, schema=dict.fromkeys(entity.column_names, pl.String))
    path = tmp_path / f"part-1{entity.suffix}"
    assert write_landing_file(entity, path, frame) == 3
    read = read_files(entity, [(path, path.name)])
    assert read.refused.num_rows == 0 and read.rejects.num_rows == 0
    back = read.rows.drop("_source_file").to_pylist()
    assert back == frame.to_dicts(), "a null stays null, quotes and commas survive"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    lines = tmp_path / "lines.jsonl"
    assert write_landing_file(entity, lines, ['{"a":"1"}\n', '{"a":\n"2"}']) == 2
    assert lines.read_text() == '{"a":"1"}\n{"a": "2"}\n', "one record per line, its own newlines become spaces"
