"""The engine protocol on every engine: Delta writes, time travel, history, landing reads."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

import narwhals as nw
import polars as pl
import pytest

from lakehouse.backends import EngineError, Lake, TableNotFoundError, get_backend
from lakehouse.backends.lake import LakeNotWritableError
from lakehouse.contracts.catalog import table
from lakehouse.contracts.expressions import record_digest
from lakehouse.contracts.landing import landing_entity
from lakehouse.deployments.settings import SparkSettings
from lakehouse.testing import handed_over

ENGINES = ["polars", "sail"]
ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = table("silver.products")
PERF = table("gold.product_performance")


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path):
    if request.param == "sail":
        return get_backend("spark", Lake(str(tmp_path / "lake")), SparkSettings(remote=request.getfixturevalue("sail_url")))
    return get_backend(request.param, Lake(str(tmp_path / "lake")))


def ts(hour: int) -> datetime:
    return datetime(2026, 11, 1, hour, tzinfo=UTC)


def products(engine, *rows) -> nw.LazyFrame:
    return engine.from_arrow(pl.DataFrame(
        [(pid, "sku", name, None, 1.0, ts(h), "f", rh) for pid, name, h, rh in rows],
        schema=PRODUCTS.polars_schema, orient="row").to_arrow())


def test_scan_of_unwritten_table_is_empty_with_declared_schema(engine):
    frame = engine.scan(PRODUCTS)
    assert frame.collect_schema().names() == PRODUCTS.columns
    assert engine.count(frame) == 0
    assert engine.version(PRODUCTS) is None
    with pytest.raises(TableNotFoundError, match="never written"):
        engine.scan(PRODUCTS, version=0)


def test_merge_latest_wins_and_time_travel(engine):
    first = engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1"), ("p2", "b", 1, "h2")))
    assert (first.version, first.rows) == (0, 2)
    # p1 newer → updated; p2 older → kept; p3 new → inserted
    engine.merge(PRODUCTS, products(engine, ("p1", "a2", 2, "h3"), ("p2", "old", 0, "h0"), ("p3", "c", 1, "h4")))
    names = {r["product_id"]: r["product_name"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()}
    assert names == {"p1": "a2", "p2": "b", "p3": "c"}
    # same updated_at: the larger record hash wins, whatever the arrival order
    engine.merge(PRODUCTS, products(engine, ("p3", "c-tie", 1, "h9")))
    assert engine.merge(PRODUCTS, products(engine, ("p3", "c-lower", 1, "h0"))).rows == 0
    assert engine.version(PRODUCTS) == 2  # a merge that changes nothing commits nothing
    names = {r["product_id"]: r["product_name"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()}
    assert names["p3"] == "c-tie"
    v0 = {r["product_id"]: r["product_name"] for r in engine.to_arrow(engine.scan(PRODUCTS, version=0)).to_pylist()}
    assert v0 == {"p1": "a", "p2": "b"}
    assert len(engine.history(PRODUCTS, limit=10)) == 3
    with pytest.raises(TableNotFoundError):
        engine.scan(PRODUCTS, version=99)


def test_replace_rows_puts_older_versions_back_and_deletes_keys_without_one(engine):
    """What a date conformed again under a stricter rule does to silver: the rows it no longer accepts are
    replaced by the versions before it (older ``latest_by``, which a merge would not take) or deleted."""
    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1"), ("p2", "b", 1, "h2"), ("p3", "c", 1, "h3")))
    engine.merge(PRODUCTS, products(engine, ("p1", "a2", 2, "h4"), ("p2", "b2", 2, "h5")))
    before = engine.version(PRODUCTS)
    withdrawn = engine.scan(PRODUCTS).filter(nw.col("product_id").is_in(["p1", "p2"]))
    done = engine.replace_rows(PRODUCTS, withdrawn, products(engine, ("p1", "a", 1, "h1")))
    assert done.version == before + 1 and done.rows == 1
    rows = {r["product_id"]: (r["product_name"], r["_record_hash"])
            for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()}
    assert rows == {"p1": ("a", "h1"), "p3": ("c", "h3")}
    nothing = engine.replace_rows(PRODUCTS, engine.scan(PRODUCTS).filter(nw.col("product_id") == "none"),
                                  products(engine))
    assert nothing.rows == 0 and engine.count(engine.scan(PRODUCTS)) == 2


def test_merge_insert_only_keeps_existing_rows(engine):
    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1")))
    engine.merge(PRODUCTS, products(engine, ("p1", "changed", 5, "h5"), ("p2", "b", 1, "h2")), insert_only=True)
    names = {r["product_id"]: r["product_name"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()}
    assert names == {"p1": "a", "p2": "b"}


def perf(engine, *rows) -> nw.LazyFrame:
    return engine.from_arrow(pl.DataFrame(
        [(d, p, n, n, float(n), 1, 0, 0.0) for d, p, n in rows], schema=PERF.polars_schema, orient="row").to_arrow())


def test_append_overwrite_and_partition_overwrite(engine):
    d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
    engine.append(PERF, perf(engine, (d1, "p1", 1), (d2, "p1", 2)))
    engine.append(PERF, perf(engine, (d2, "p2", 3)))
    assert engine.count(engine.scan(PERF)) == 3
    engine.overwrite_partitions(PERF, perf(engine, (d2, "p9", 9)))
    got = sorted((r["order_date"], r["product_id"]) for r in engine.to_arrow(engine.scan(PERF)).to_pylist())
    assert got == [(d1, "p1"), (d2, "p9")]
    engine.overwrite(PERF, perf(engine, (d1, "only", 1)))
    assert [r["product_id"] for r in engine.to_arrow(engine.scan(PERF)).to_pylist()] == ["only"]
    before = engine.version(PERF)
    assert engine.append(PERF, perf(engine)).rows == 0 and engine.version(PERF) == before


def test_read_landing_csv_parquet_and_missing_column(engine, tmp_path):
    accounts = landing_entity("crm.accounts")
    csv = tmp_path / "accounts.csv"
    pl.DataFrame({c: [f"{c}-1", None] for c in accounts.column_names}).write_csv(csv)
    read = engine.read_landing(accounts, [(csv, "crm/accounts/2026-11-01/accounts.csv")])
    rows = engine.to_arrow(read.rows).to_pylist()
    assert [r["account_id"] for r in rows] == ["account_id-1", None]
    assert rows[0]["_source_file"] == "crm/accounts/2026-11-01/accounts.csv"
    assert rows[0]["_record_hash"] == record_digest([f"{c}-1" for c in accounts.column_names])
    assert engine.count(read.rejects) == 0

    renamed = tmp_path / "renamed.csv"
    pl.DataFrame({c if c != "domain" else "web_domain": ["x"] for c in accounts.column_names}).write_csv(renamed)
    bad = engine.read_landing(accounts, [(renamed, "renamed.csv"), (csv, "good.csv")])
    assert {r["_source_file"] for r in engine.to_arrow(bad.rows).to_pylist()} == {"good.csv"}, "only that file stops"
    assert engine.count(bad.rejects) == 0
    refused = bad.refused.to_pylist()
    assert [(r["source_file"], r["problem"]) for r in refused] == [("renamed.csv", "schema.missing_column")]
    assert "expected column(s) ['domain'] in renamed.csv (crm.accounts)" in refused[0]["reason"]
    assert "['web_domain'] not declared: renamed?" in refused[0]["reason"]

    customers = landing_entity("snowflake.customers")
    pq = tmp_path / "customers.parquet"
    pl.DataFrame({c: ["v"] for c in customers.column_names}).write_parquet(pq)
    assert engine.to_arrow(engine.read_landing(customers, [(pq, "c")]).rows).to_pylist()[0]["email"] == "v"

    nested = tmp_path / "nested.parquet"
    pl.DataFrame({c: ["v"] if c != "email" else [["a@b.co", "c@d.co"]] for c in customers.column_names}
                 ).write_parquet(nested)
    uncastable = engine.read_landing(customers, [(nested, "nested.parquet")])
    assert engine.count(uncastable.rows) == 0
    [why] = uncastable.refused.to_pylist()
    assert why["problem"] == "schema.uncastable_column"
    assert "expected column(s) ['email'] of nested.parquet (snowflake.customers) as text" in why["reason"]


def test_read_landing_jsonl_quarantines_malformed_lines(engine, tmp_path):
    fx = landing_entity("fx.rates")
    good = {"rate_date": "2026-11-02", "base_currency": "USD", "quote_currency": "EUR", "rate": 0.92,
            "published_at": "2026-11-02T16:00:00Z"}
    f = tmp_path / "rates.jsonl"
    f.write_text(json.dumps(good) + "\n" + '{"rate_date": "2026-11-0\n' + "not json\n\n" + "{}\n")
    second, empty = tmp_path / "rates-2.jsonl", tmp_path / "rates-3.jsonl"
    second.write_text(json.dumps({**good, "rate": "1.1"}) + "\n[1, 2]\n")
    empty.write_text("")
    read = engine.read_landing(fx, [(f, "fx/a.jsonl"), (second, "fx/b.jsonl"), (empty, "fx/c.jsonl")])
    rows = engine.to_arrow(read.rows).to_pylist()
    # the valid '{}' line is kept for silver to judge
    assert sorted((r["_source_file"], r["rate"] or "") for r in rows) == [
        ("fx/a.jsonl", ""), ("fx/a.jsonl", "0.92"), ("fx/b.jsonl", "1.1")]
    assert all(r["_record_hash"] == record_digest([r[c] for c in fx.column_names]) for r in rows)
    rejected = engine.to_arrow(read.rejects)
    rejects = sorted(zip(rejected.column("source_file").to_pylist(), rejected.column("record").to_pylist()))
    assert rejects == sorted([("fx/a.jsonl", '{"rate_date": "2026-11-0'), ("fx/a.jsonl", "not json"),
                               ("fx/b.jsonl", "[1, 2]")])
    assert sorted(zip(rejected.column("record").to_pylist(), rejected.column("rule").to_pylist())) == sorted([
        ('{"rate_date": "2026-11-0', "parse.malformed_json"), ("not json", "parse.malformed_json"),
        ("[1, 2]", "parse.not_an_object")])


def test_unknown_backend_and_unwritable_lake(tmp_path):
    with pytest.raises(EngineError, match="expected a backend among"):
        get_backend("duckdb", Lake(str(tmp_path)))
    with pytest.raises(LakeNotWritableError, match="expected a writable lake root"):
        Lake("/proc/lake").check_writable()  # /proc cannot hold folders, even for root


def test_writes_are_checked_against_the_contract_and_bad_rows_write_nothing(engine):
    from lakehouse.backends import ContractViolation

    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1")))
    negative = engine.from_arrow(pl.DataFrame([("p2", "sku", "n", None, -5.0, ts(1), "f", "h2")],
                                              schema=PRODUCTS.polars_schema, orient="row").to_arrow())
    with pytest.raises(ContractViolation, match="list_price_usd"):
        engine.merge(PRODUCTS, negative)
    duplicated = products(engine, ("p3", "a", 1, "h3"), ("p3", "b", 2, "h4"))
    with pytest.raises(ContractViolation, match="silver.products"):
        engine.overwrite(PRODUCTS, duplicated)
    with pytest.raises(ContractViolation, match=r"expected columns \['list_price_usd'\] in the rows for 'silver.products'"):
        engine.append(PRODUCTS, negative.drop("list_price_usd"))
    assert [r["product_id"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()] == ["p1"]
    assert engine.version(PRODUCTS) == 0


def test_classic_spark_without_delta_says_what_to_use_instead(jvm_session, tmp_path):
    """Local JVM Spark here has no Delta jars: a Delta write fails with an error naming the alternatives."""
    engine = get_backend("spark", Lake(str(tmp_path / "lake")),
                         SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}))
    with pytest.raises(EngineError, match="--spark-remote"):
        engine.overwrite(PERF, perf(engine, (date(2026, 11, 1), "p1", 1)))


@pytest.mark.parametrize("kind", ["sail", "jvm"])
def test_spark_sessions_do_not_capture_python_call_sites(kind, request):
    """PySpark 4 records the Python call site of every DataFrame and column call for its error messages; on a
    classic session that is several py4j round trips more per call. The project's sessions turn it off (Sail's
    and a classic one alike), and queries still run."""
    from pyspark.errors.utils import is_debugging_enabled

    from lakehouse.backends.spark.session import session_for

    if kind == "sail":
        spark, _ = session_for(SparkSettings(remote=request.getfixturevalue("sail_url")))
    else:
        spark = request.getfixturevalue("jvm_session")
    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    numbers = spark.range(3)
    frame = numbers.withColumn("twice", numbers["id"] * 2)
    assert [r.twice for r in frame.orderBy("id").collect()] == [0, 2, 4]
    assert not is_debugging_enabled()


def test_the_laptop_engine_runs_without_pyspark(tmp_path):
    """pyspark is imported only by the Spark engine: with it unimportable, the laptop engine still works."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['pysail'] = None\n"
        "import polars as pl\n"
        "from lakehouse.backends import Lake, get_backend, EngineError\n"
        "from lakehouse.contracts.catalog import table\n"
        "spec = table('silver.products')\n"
        f"engine = get_backend('polars', Lake({str(tmp_path / 'lake')!r}))\n"
        "rows = pl.DataFrame([('p1', 's', 'n', None, 1.0, None, 'f', 'h')], schema=spec.polars_schema, orient='row')\n"
        "rows = rows.with_columns(pl.lit('2026-11-01T00:00:00Z').str.to_datetime(time_zone='UTC').alias('updated_at'))\n"
        "engine.merge(spec, engine.from_arrow(rows.to_arrow()))\n"
        "assert engine.count(engine.scan(spec)) == 1\n"
        "try:\n    get_backend('spark', Lake('x'))\nexcept EngineError as e:\n    print('SPARK:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SPARK: expected pyspark for --backend spark" in out.stdout


def test_spark_with_neither_remote_nor_master_starts_an_embedded_sail_server(tmp_path):
    """The default of --backend spark: Sail in this process on loopback, Spark's API with no JVM."""
    from lakehouse.backends.spark.session import embedded_sail_url

    engine = get_backend("spark", Lake(str(tmp_path / "lake")))
    assert engine.kind == "sail" and embedded_sail_url().startswith("sc://127.0.0.1:")
    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1"), ("p2", "b", 1, "h2")))
    assert sorted(r["product_id"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()) == ["p1", "p2"]
    assert engine.version(PRODUCTS) == 0
    # Sail cannot cache: materialize computes the rows once into Parquet under the lake's _staging/ and reads
    # them from there, so a later change of the table does not reach them; release removes them.
    frame = engine.materialize(engine.scan(PRODUCTS))
    engine.merge(PRODUCTS, products(engine, ("p3", "c", 1, "h3")))
    assert sorted(r["product_id"] for r in engine.to_arrow(frame).to_pylist()) == ["p1", "p2"]
    staging = tmp_path / "lake" / "_staging"
    assert len(list(staging.iterdir())) == 1, "the merge's own staged rows are gone, the materialised ones kept"
    import pyarrow.parquet as pq

    codecs = {pq.ParquetFile(f).metadata.row_group(0).column(0).compression for f in staging.rglob("*.parquet")}
    assert codecs == {"SNAPPY"}  # Spark's own default, not Sail's ZSTD: staged rows are written once, read back
    engine.release()
    assert list(staging.iterdir()) == []
    assert [g.operation for g in engine.gaps if g.engine == "spark (Sail)"] == []
    # The embedded server runs its operators on batches of 32,768 rows (Sail's default: 8,192), which a read of a
    # file's rows shows as the batches it sends.
    assert _sail_batches(engine, tmp_path) == [32768, 32768, 32768, 1696]


def _sail_batches(engine, tmp_path) -> list[int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": list(range(100_000))}), tmp_path / "rows.parquet")
    return [len(b) for b in engine.spark.read.parquet(str(tmp_path / "rows.parquet")).toArrow().to_batches()]


def test_the_embedded_sail_server_keeps_a_batch_size_the_environment_sets(tmp_path):
    """EMBEDDED_SAIL_ENV gives defaults: a Sail setting in the environment wins (a new process, as the embedded
    server starts once per process)."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from lakehouse.backends import Lake, get_backend; "
              "from test_backend import _sail_batches; "
              "engine = get_backend('spark', Lake(sys.argv[1] + '/lake')); "
              "print(_sail_batches(engine, Path(sys.argv[1])))")
    env = {**os.environ, "SAIL_EXECUTION__BATCH_SIZE": "16384",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str([16384] * 6 + [1696])


def test_a_subset_of_materialised_rows_is_held_by_polars_and_computed_again_from_them_by_spark(engine, tmp_path):
    """materialize_subset: the same rows on both engines; Polars holds them on their own (a later change of what
    they were taken from does not reach them), Spark writes nothing more and computes them from the rows
    materialised before (which a later change of the table does not reach either)."""
    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1"), ("p2", "b", 1, "h2"), ("p3", "c", 1, "h3")))
    rows = engine.materialize(engine.scan(PRODUCTS))
    staging = tmp_path / "lake" / "_staging"
    staged = sorted(staging.iterdir()) if staging.exists() else []
    subset = engine.materialize_subset(rows.filter(nw.col("product_id") != "p2").with_columns(
        nw.concat_str(nw.col("product_name"), nw.lit("!")).alias("product_name")))
    assert (sorted(staging.iterdir()) if staging.exists() else []) == staged  # nothing more written on Spark
    engine.merge(PRODUCTS, products(engine, ("p4", "d", 1, "h4"), ("p1", "z", 2, "h5")))
    for _ in range(2):  # used twice, as silver uses its accepted rows: the same rows each time
        assert sorted((r["product_id"], r["product_name"]) for r in engine.to_arrow(subset).to_pylist()) == [
            ("p1", "a!"), ("p3", "c!")]
    assert engine.count(subset) == 2
    if engine.name == "polars":  # computed: its plan is the rows themselves, not the filter over the others
        assert subset.to_native().explain().startswith("DF ")


def test_tables_with_features_one_engine_cannot_read_are_refused(tmp_path):
    from deltalake import write_deltalake

    from lakehouse.backends.lake import UnportableTableError

    with pytest.raises(UnportableTableError, match="deletion vectors"):
        Lake(str(tmp_path / "lake"), table_configuration={"delta.enableDeletionVectors": "true"})
    with pytest.raises(UnportableTableError, match="columnMapping"):
        Lake(str(tmp_path / "lake"), table_configuration={"delta.columnMapping.mode": "name"})
    lake = Lake(str(tmp_path / "lake"))
    engine = get_backend("polars", lake)
    seed = pl.DataFrame([(date(2026, 11, 1), "p0", 1, 1, 1.0, 1, 0, 0.0)], schema=PERF.polars_schema, orient="row")
    write_deltalake(lake.uri(PERF), seed.to_arrow(), partition_by=["order_date"],
                    configuration={"delta.enableDeletionVectors": "true"})  # made by another tool
    with pytest.raises(UnportableTableError, match="deletionVectors"):
        engine.append(PERF, perf(engine, (date(2026, 11, 2), "p1", 1)))


def test_the_laptop_engine_reports_pandera_failure_cases(tmp_path):
    """Both engines check writes with the compiled contract in one pass; on the laptop engine a failure also
    carries pandera's failure cases (the offending values)."""
    from lakehouse.backends import ContractViolation

    engine = get_backend("polars", Lake(str(tmp_path / "lake")))
    negative = engine.from_arrow(pl.DataFrame([("p2", "sku", "n", None, -5.0, ts(1), "f", "h2")],
                                              schema=PRODUCTS.polars_schema, orient="row").to_arrow())
    with pytest.raises(ContractViolation, match=r"1 failure\(s\), first: \[\('list_price_usd', "
                                                r"'greater_than_or_equal_to\(0\)', '-5.0'\)\]"):
        engine.merge(PRODUCTS, negative)


def test_a_loaded_delta_log_follows_other_writers_and_a_table_written_anew(tmp_path):
    """The process keeps each table's loaded log: it must still see commits made by another process, and a
    table deleted and written again from scratch at the same place (never the old one's files)."""
    import shutil
    import subprocess
    import sys

    from deltalake import write_deltalake

    root = tmp_path / "lake"
    engine = get_backend("polars", Lake(str(root)))
    engine.merge(PRODUCTS, products(engine, ("p1", "a", 1, "h1")))
    assert engine.count(engine.scan(PRODUCTS)) == 1
    uri = Lake(str(root)).uri(PRODUCTS)
    script = ("import sys, polars as pl; from deltalake import DeltaTable, write_deltalake; "
              "t = DeltaTable(sys.argv[1]).to_pyarrow_table(); "
              "write_deltalake(sys.argv[1], pl.from_arrow(t).with_columns(pl.lit('p9').alias('product_id')).to_arrow(), "
              "mode='append')")
    subprocess.run([sys.executable, "-c", script, uri], check=True)
    fresh = get_backend("polars", Lake(str(root)))  # a new engine in this process: the log it gets is cached
    assert sorted(r["product_id"] for r in fresh.to_arrow(fresh.scan(PRODUCTS)).to_pylist()) == ["p1", "p9"]
    assert fresh.version(PRODUCTS) == 1
    assert [r["product_id"] for r in fresh.to_arrow(fresh.scan(PRODUCTS, version=0)).to_pylist()] == ["p1"]

    shutil.rmtree(uri)
    for name in ("x1", "x2"):  # two commits again: versions 0 and 1, other files
        write_deltalake(uri, products(engine, (name, name, 1, f"h-{name}")).to_native().collect().to_arrow(),
                        mode="append")
    again = get_backend("polars", Lake(str(root)))
    assert sorted(r["product_id"] for r in again.to_arrow(again.scan(PRODUCTS)).to_pylist()) == ["x1", "x2"]
    assert [r["product_id"] for r in again.to_arrow(again.scan(PRODUCTS, version=0)).to_pylist()] == ["x1"]


def test_the_laptop_engine_writes_digests_without_a_dictionary_and_compresses_with_zstd(tmp_path):
    """Record hashes are plain-encoded (a dictionary of random unique values only slows the writer; Polars
    leaves it out of a column of mostly distinct values); text columns of few distinct values keep theirs; every
    column is ZSTD-compressed; by a write and a merge."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    lake = Lake(str(tmp_path / "lake"))
    engine = get_backend("polars", lake)
    import hashlib

    digest = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2001)]
    engine.merge(PRODUCTS, products(engine, *((f"p{i}", "same name", 1, digest[i]) for i in range(2000))))  # a write
    written = DeltaTable(lake.uri(PRODUCTS)).file_uris()
    engine.merge(PRODUCTS, products(engine, ("p1", "renamed", 2, digest[2000]), ("p2000", "same name", 1, "h")))
    merged = DeltaTable(lake.uri(PRODUCTS)).file_uris()
    assert written and merged and not set(written) & set(merged)  # the merge rewrote the write's file
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    for file in written + merged:
        group = pq.ParquetFile(file).metadata.row_group(0)
        columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        assert not set(columns["_record_hash"].encodings) & dictionary, columns["_record_hash"].encodings
        assert set(columns["product_name"].encodings) & dictionary, columns["product_name"].encodings
        assert {c.compression for c in columns.values()} == {"ZSTD"}
    names = {r["product_id"]: r["product_name"] for r in engine.to_arrow(engine.scan(PRODUCTS)).to_pylist()}
    assert len(names) == 2001 and names["p1"] == "renamed"


VERSIONS = table("silver.customer_versions")


def versions(*rows: tuple[str, datetime, str]) -> pl.DataFrame:
    """silver.customer_versions rows: (customer id, updated_at, record hash)."""
    digest = "0" * 64
    return pl.DataFrame(
        [(cid, None, None, digest, "a***@x.com", None, None, "DE", date(2026, 1, 1), at, "f", rh)
         for cid, at, rh in rows], schema=VERSIONS.polars_schema, orient="row")


def file_stats(lake: Lake) -> dict:
    """The statistics of the one file the latest commit of silver.customer_versions added (from its log)."""
    last = max(Path(lake.uri(VERSIONS), "_delta_log").glob("*.json"))
    adds = [json.loads(line)["add"] for line in last.read_text().splitlines() if '"add"' in line]
    return json.loads(adds[0]["stats"])


def test_a_merge_reads_only_the_files_whose_key_statistics_can_hold_a_source_key(tmp_path):
    """A history table (key: customer id and updated_at) gains a file a day: a merge of today's versions reads
    only the files whose updated_at range can hold one, and still finds an existing key among them."""
    engine = get_backend("polars", Lake(str(tmp_path / "lake")))
    for day in (1, 2, 3):
        engine.merge(VERSIONS, nw.from_native(versions(
            *((f"C{i}", datetime(2026, 11, day, i, tzinfo=UTC), f"h{day}-{i}") for i in range(1, 4))).lazy()))
    again = datetime(2026, 11, 3, 2, tzinfo=UTC)  # an existing key of day 3, with a larger record hash
    result = engine.merge(VERSIONS, nw.from_native(versions(
        ("C2", again, "h9"), ("C9", datetime(2026, 11, 3, 23, tzinfo=UTC), "h9-9")).lazy()))
    assert (result.files_scanned, result.files_skipped, result.rows) == (1, 2, 2)
    rows = engine.to_arrow(engine.scan(VERSIONS)).to_pylist()
    assert len(rows) == 10  # 9 + the new key; the existing one was updated in place, not added
    assert [r["_record_hash"] for r in rows if (r["customer_id"], r["updated_at"]) == ("C2", again)] == ["h9"]


def test_a_merge_finds_a_key_at_a_files_maximum_that_delta_rs_truncated_to_milliseconds(tmp_path):
    """delta-rs (and Spark) write a timestamp maximum truncated to milliseconds: a key at the file's true
    maximum (with microseconds) is still read and matched, never added a second time."""
    from deltalake import write_deltalake

    lake = Lake(str(tmp_path / "lake"))
    engine = get_backend("polars", lake)
    last = datetime(2026, 11, 1, 10, 0, 5, 987654, tzinfo=UTC)
    old = versions(("C1", datetime(2026, 11, 1, 9, tzinfo=UTC), "h1"), ("C2", last, "h2"))
    write_deltalake(lake.uri(VERSIONS), old.to_arrow().cast(VERSIONS.arrow_schema))
    stats = file_stats(lake)
    assert stats["maxValues"]["updated_at"] == "2026-11-01T10:00:05.987Z"  # below the true maximum
    result = engine.merge(VERSIONS, nw.from_native(versions(("C2", last, "h3")).lazy()), insert_only=True)
    assert (result.files_scanned, result.rows) == (1, 0)
    assert engine.count(engine.scan(VERSIONS)) == 2


def test_the_laptop_engine_writes_delta_statistics_every_engine_reads(tmp_path, sail_url):
    """The add actions of the files Polars writes carry rows, null counts and min/max per column (timestamps
    in UTC with milliseconds, the maximum rounded up); Spark (Sail) reads the table and prunes by them."""
    lake = Lake(str(tmp_path / "lake"))
    engine = get_backend("polars", lake)
    late = datetime(2026, 11, 2, 8, 0, 0, 500, tzinfo=UTC)  # 0.5 ms: the maximum rounds up to .001
    engine.merge(VERSIONS, nw.from_native(versions(("C1", datetime(2026, 11, 1, 9, tzinfo=UTC), "h1"),
                                                    ("C2", late, "h2")).lazy()))
    stats = file_stats(lake)
    assert stats["numRecords"] == 2
    assert stats["nullCount"]["first_name"] == 2 and stats["nullCount"]["customer_id"] == 0
    assert stats["minValues"]["customer_id"] == "C1" and stats["maxValues"]["customer_id"] == "C2"
    assert stats["minValues"]["updated_at"] == "2026-11-01T09:00:00.000Z"
    assert stats["maxValues"]["updated_at"] == "2026-11-02T08:00:00.001Z"
    assert stats["minValues"]["signup_date"] == "2026-01-01"
    assert "first_name" not in stats["minValues"]  # no value, no bound
    spark = get_backend("spark", lake, SparkSettings(remote=sail_url))
    found = spark.to_arrow(spark.scan(VERSIONS).filter(nw.col("updated_at") == nw.lit(late))).to_pylist()
    assert [r["customer_id"] for r in found] == ["C2"]


def test_gap_scan_changes_is_the_changed_files_on_polars_and_the_whole_table_on_spark(engine):
    """Both engines give the changed row among what left and what came; Spark declares that it hands over the
    whole table at both versions (a gap in docs/engines.md), the laptop engine only the rewritten files."""
    day = date(2026, 11, 1)
    engine.append(PERF, perf(engine, *[(day, f"p{i}", 1) for i in range(3)]))
    engine.append(PERF, perf(engine, (day, "p9", 2)))
    gone, came = engine.scan_changes(PERF, since=0)
    assert "p9" in {r["product_id"] for r in engine.to_arrow(came).to_pylist()}
    declared = {g.operation for g in engine.gaps}
    if "scan_changes" in declared:
        assert engine.count(gone) == 3 and engine.count(came) == 4
    else:
        assert engine.count(gone) == 0 and engine.count(came) == 1


def test_landing_files_are_read_by_the_engine_and_only_a_row_per_file_reaches_the_driver(engine, tmp_path,
                                                                                        monkeypatch):
    """Both engines read landing files with the one reader (``backends/landing.py``). On Spark it runs in the
    engine's tasks, never on the calling (driver) thread, and of thousands of rows and rejected lines only a row
    per file comes to the driver through the engine (``to_arrow``); the rows and rejects are the engine's frames."""
    import threading

    from lakehouse.backends import landing
    from lakehouse.contracts.landing import landing_entity

    entity = landing_entity("fx.rates")
    good, bad = 4_000, 3_000
    files = []
    for part in range(3):
        lines = [json.dumps({"rate_date": "2026-11-01", "base_currency": "USD", "quote_currency": f"Q{part}{i:05d}",
                             "rate": "0.9", "published_at": "2026-11-01T16:00:00Z"}) for i in range(good)]
        lines += [f"not json {part}-{i}" for i in range(bad)]
        path = tmp_path / f"rates-{part}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files.append((path, f"fx/rates/2026-11-01/rates-{part}.jsonl"))
    threads = []
    real = landing.read_files
    monkeypatch.setattr(landing, "read_files", lambda *a, **k: threads.append(threading.get_ident()) or real(*a, **k))
    with handed_over(engine) as sizes:
        read = engine.read_landing(entity, files)

    if engine.name == "spark":  # the reads ran in Sail's tasks (its server's process here), never on this thread
        assert threading.get_ident() not in threads
        assert sizes and max(sizes) <= len(files), sizes
    else:
        assert threads == [threading.get_ident()]
    assert read.records == {label: good + bad for _, label in files} and read.refused.num_rows == 0
    assert engine.count(read.rows) == 3 * good
    assert engine.count(read.rows.filter(nw.col("quote_currency") == "Q200017")) == 1
    rules = engine.to_arrow(read.rejects.group_by("rule").agg(nw.len().alias("n"))).to_pylist()
    assert rules == [{"rule": "parse.malformed_json", "n": 3 * bad}]

def test_a_local_classic_session_reads_landing_files_in_python_workers_that_import_the_project(jvm_session, tmp_path):
    """Classic Spark on a laptop (``local[2]``; no Delta here, so only the read): the landing read's tasks run in
    Spark's Python workers, which start with this interpreter (the project importable), and give the laptop
    engine's records, rows and rejects."""
    from lakehouse.backends.spark.engine import SparkDeltaEngine

    entity = landing_entity("fx.rates")
    lines = [json.dumps({"rate_date": "2026-11-02", "base_currency": "USD", "quote_currency": f"Q{i:03d}",
                         "rate": "1.5", "published_at": "2026-11-02T16:00:00Z"}) for i in range(50)] + ["not json"]
    path = tmp_path / "rates.jsonl"
    path.write_text("\n".join(lines) + "\n")
    files = [(path, "fx/rates/2026-11-02/rates.jsonl")]
    lake = Lake(str(tmp_path / "lake"))
    classic = SparkDeltaEngine(lake, jvm_session, "classic")
    laptop = get_backend("polars", lake)
    read, want = classic.read_landing(entity, files), laptop.read_landing(entity, files)
    assert read.records == want.records == {"fx/rates/2026-11-02/rates.jsonl": 51}
    got_rows = classic.to_arrow(read.rows.select("quote_currency", "_record_hash")).sort_by("quote_currency")
    want_rows = laptop.to_arrow(want.rows.select("quote_currency", "_record_hash")).sort_by("quote_currency")
    assert got_rows.num_rows == 50 and got_rows.to_pylist() == want_rows.to_pylist()
    assert classic.count(read.rejects) == laptop.count(want.rejects) == 1
