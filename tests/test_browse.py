"""Browsing data from the CLI: ``show`` (columns, filters, ordering, formats, the terminal's width),
``quarantine show`` with an unknown rule, ``status`` for a table no task of its own writes, ``demo``'s
folders. On the lakes both engines built (the same rows must print the same way)."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from typer.testing import CliRunner

from lakehouse.flows.api import read
from lakehouse.flows.cli import app

runner = CliRunner()


@pytest.fixture(params=["polars", "sail"])
def lake(request, daily_lakes) -> str:
    return str(daily_lakes(request.param)["pristine"])


def _show(lake: str, *args: str, columns: int = 200):
    return runner.invoke(app, ["show", *args, "--lake-root", lake], env={"COLUMNS": str(columns)})


def test_show_orders_by_key_and_fits_the_terminal(lake):
    out = _show(lake, "gold.fact_orders", "--limit", "5", columns=100)
    assert out.exit_code == 0, out.output
    assert max(len(line) for line in out.output.splitlines()) <= 100
    smallest = read("gold.fact_orders", lake_root=lake).select("order_id").sort("order_id").head(5).collect()
    ids = [i for i in smallest["order_id"]]
    positions = [out.output.index(i) for i in ids]
    assert positions == sorted(positions), "rows print in key order"


def test_show_selects_filters_and_orders_as_asked(lake):
    out = _show(lake, "gold.fact_orders", "--columns", "order_id,currency,amount_usd", "--where", "currency=EUR",
                "--where", "amount_usd>=50", "--order-by", "amount_usd:desc", "--limit", "7", "--format", "csv")
    assert out.exit_code == 0, out.output
    got = pl.read_csv(io.StringIO(out.output))
    want = (read("gold.fact_orders", lake_root=lake)
            .filter((pl.col("currency") == "EUR") & (pl.col("amount_usd") >= 50))
            .sort(["amount_usd", "order_id"], descending=[True, False]).head(7)
            .select("order_id", "currency", "amount_usd").collect())
    assert got.columns == ["order_id", "currency", "amount_usd"]
    assert got["order_id"].to_list() == want["order_id"].to_list() and got.height == 7


def test_show_writes_json_lines_with_dates_and_reads_as_of_a_release(lake):
    out = _show(lake, "gold.fact_orders", "--columns", "order_id,order_date", "--where", "order_date=2026-11-01",
                "--as-of", "gold-000001", "--limit", "3", "--format", "json")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert len(rows) == 3 and {r["order_date"] for r in rows} == {"2026-11-01"}
    assert [r["order_id"] for r in rows] == sorted(r["order_id"] for r in rows)


@pytest.mark.parametrize(("args", "expected"), [
    (["--columns", "order_id,nope"], "expected a column among order_id, order_date"),
    (["--where", "order_date=yesterday"], "expected a Date value for 'order_date' (e.g. 2026-11-01)"),
    (["--where", "amount_usd~3"], "expected a filter like 'country=DE'"),
    (["--order-by", "amount_usd:down"], "expected --order-by COLUMN or COLUMN:desc"),
    (["--as-of", "gold-999999"], "expected a gold release id among the recent ones"),
])
def test_show_names_what_it_expected(pristine_lake, args, expected):
    out = _show(str(pristine_lake["root"]), "gold.fact_orders", *args)
    assert out.exit_code == 2
    assert expected in " ".join(out.output.split())


def test_quarantine_show_lists_the_rules_there_are(lake):
    listing = read("quarantine.silver.orders", lake_root=lake).select("rule").unique().collect()
    out = runner.invoke(app, ["quarantine", "show", "silver.orders", "--rule", "nope.rule", "--lake-root", lake])
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "expected a rule with rows in quarantine.silver.orders" in text and "'nope.rule'" in text
    for rule in listing["rule"]:
        assert rule in text


def test_status_shows_when_a_table_without_a_task_of_its_own_was_written(lake):
    out = runner.invoke(app, ["status", "--lake-root", lake], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "silver.customer_versions" in x)
    assert "never written" not in line


def test_demo_writes_where_it_is_told(prefect_harness, tmp_path):
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    out = runner.invoke(app, ["demo", "--days", "1", "--scale", "0.01", "--lake-root", str(lake), "--landing",
                              str(landing)])
    assert out.exit_code == 0, out.output
    assert (landing / "snowflake" / "orders" / "2026-11-01").is_dir()
    assert read("gold.fact_orders", lake_root=str(lake)).collect().height > 0


def test_tables_counts_rows_from_the_delta_log_as_a_scan_does(lake):
    """``tables`` reads row counts from the Delta log's file statistics (no data read): the same numbers a scan
    gives, for every table either engine wrote, gold at its released version."""
    from deltalake import DeltaTable

    from lakehouse.backends import Lake
    from lakehouse.backends.releases import Releases
    from lakehouse.contracts.catalog import TABLES

    store, released = Lake(lake), Releases(Lake(lake)).current().versions
    out = runner.invoke(app, ["tables", "--lake-root", lake], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    rows = [[c.strip() for c in line.split("│")][1:-1] for line in out.output.splitlines() if "│" in line]
    listed = {cells[1]: cells[2] for cells in rows if len(cells) == 6}
    checked = 0
    for spec in TABLES.values():
        version = released.get(spec.name) if spec.layer == "gold" else store.version(spec)
        if version is None:
            continue
        scanned = DeltaTable(store.uri(spec), version=version).to_pyarrow_dataset().count_rows()
        assert store.row_count(spec, version) == scanned, spec.name
        assert listed[spec.name].replace(",", "") == str(scanned), spec.name
        checked += 1
    assert checked >= 25
