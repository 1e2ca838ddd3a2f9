"""Deliveries are accounted for, on both engines: an entity delivered daily whose file for the run date is
missing stops the run before anything is written (naming the entity and the folder), unless the run allows it
missing; such a run is recorded with what it went without, and a backfill runs the date again once the file has
come. An empty "no changes" file is a delivery: a day of empty files runs green, and it counts for freshness,
while a source that sends nothing for longer than its gate allows is stale."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from lakehouse.backends import Lake
from lakehouse.backends.landing import MissingDeliveryError
from lakehouse.backends.releases import Releases
from lakehouse.backends.run_log import RunLog
from lakehouse.contracts.catalog import TABLES
from lakehouse.contracts.landing import LANDING_ENTITIES, landing_entity
from lakehouse.flows.cli import app

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
runner = CliRunner()


@pytest.fixture(params=["polars", "sail"])
def first_day(request, daily_lakes, tmp_path):
    """Per engine: a copy of the sample landing and of the lake after its first day."""
    built = daily_lakes(request.param)
    landing, root = tmp_path / "landing", tmp_path / "lake"
    shutil.copytree(built["landing"], landing)
    shutil.copytree(built["first_day"], root)
    engine = ["--backend", "spark", "--spark-remote", built["engine"]["spark_remote"]] if built["engine"] else []
    return {"landing": landing, "root": root, "engine": built["engine"], "cli": engine}


def _versions(root: Path) -> dict[str, int | None]:
    lake = Lake(str(root))
    return {name: lake.version(spec) for name, spec in TABLES.items()}


def _run(s: dict, day: date, *extra: str):
    return runner.invoke(app, ["run", "--date", day.isoformat(), "--lake-root", str(s["root"]), "--landing",
                               str(s["landing"]), *s["cli"], *extra])


def test_a_missing_daily_delivery_stops_the_run_before_anything_is_written(first_day):
    from lakehouse.flows.daily import daily_lakehouse

    s = first_day
    behaviour = s["landing"] / "redshift" / "customer_behaviour" / DAY2.isoformat()
    orders = s["landing"] / "snowflake" / "orders" / DAY2.isoformat()
    shutil.rmtree(behaviour)
    for f in orders.iterdir():  # only a file of another extension is left: not a delivery
        f.rename(f.with_suffix(".txt"))
    before = _versions(s["root"])
    with pytest.raises(MissingDeliveryError) as raised:
        daily_lakehouse(run_date=DAY2, lake_root=str(s["root"]), landing_root=str(s["landing"]), **s["engine"])
    msg = str(raised.value)
    assert f"redshift.customer_behaviour (looked in {behaviour}: no such folder)" in msg
    assert f"snowflake.orders (looked in {orders}: only orders.txt" in msg
    assert "--allow-missing snowflake.orders --allow-missing redshift.customer_behaviour" in msg
    assert "products" not in msg and "fx.rates" not in msg, "entities delivered when changed may be absent"
    assert _versions(s["root"]) == before, "nothing was written"
    assert DAY2 not in RunLog(Lake(str(s["root"]))).done_dates()

    out = _run(s, DAY2)
    assert out.exit_code == 1 and "run of 2026-11-02 stopped" in out.output, out.output
    assert "Traceback" not in out.output
    bad = _run(s, DAY2, "--allow-missing", "nope.entity")
    assert bad.exit_code == 2 and "--allow-missing: expected entity names among" in bad.output, bad.output


def test_a_run_allowed_to_go_without_a_delivery_is_run_again_by_a_backfill_once_it_comes(first_day, tmp_path):
    s = first_day
    behaviour = s["landing"] / "redshift" / "customer_behaviour" / DAY2.isoformat()
    aside = tmp_path / "behaviour-late"
    shutil.move(behaviour, aside)
    out = _run(s, DAY2, "--allow-missing", "redshift.customer_behaviour")
    assert out.exit_code == 0, out.output
    log = RunLog(Lake(str(s["root"])))
    assert log.went_without()[DAY2] == ["redshift.customer_behaviour"]
    assert Releases(Lake(str(s["root"]))).current().run_date == DAY2
    args = ["--lake-root", str(s["root"]), "--landing", str(s["landing"]), *s["cli"]]
    skipped = runner.invoke(app, ["backfill", "--from", DAY2.isoformat(), "--to", DAY2.isoformat(), *args])
    assert skipped.exit_code == 0 and "1 date(s) already done, skipped" in skipped.output, skipped.output

    shutil.move(aside, behaviour)  # the late delivery
    again = runner.invoke(app, ["backfill", "--from", DAY2.isoformat(), "--to", DAY2.isoformat(), *args])
    assert again.exit_code == 0 and "already done" not in again.output, again.output
    assert log.went_without()[DAY2] == []
    # The sample's day 2 behaviour file has a renamed column: read this time, and refused for it.
    refused = Lake(str(s["root"])).read_log("_refused/redshift/customer_behaviour")
    assert refused is not None and [r["problem"] for r in refused.to_pylist() if r["run_date"] == DAY2] == [
        "schema.missing_column"]


def _empty_file(entity, folder: Path) -> None:
    """The "no changes" delivery of ``entity``: a CSV header, a Parquet file of no rows, an empty JSON-lines file."""
    folder.mkdir(parents=True, exist_ok=True)
    name = folder / f"no-changes{entity.suffix}"
    if entity.format == "csv":
        name.write_text(",".join(entity.column_names) + "\n")
    elif entity.format == "parquet":
        pl.DataFrame({c: pl.Series([], dtype=pl.Utf8) for c in entity.column_names}).write_parquet(name)
    else:
        name.write_bytes(b"")


def test_empty_files_are_deliveries_that_keep_a_quiet_source_fresh(first_day):
    """Six days after the first, every source sends an empty file: the day runs green (freshness sees each
    source delivered that day). Six days after that, products (delivered when changed) sent nothing since:
    its gate calls it stale, while the sources that sent empty files are fresh."""
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks.gates import GateFailedError

    s = first_day
    quiet = DAY1 + timedelta(days=6)
    for e in LANDING_ENTITIES:
        _empty_file(e, s["landing"] / e.source / e.entity / quiet.isoformat())
    summaries = daily_lakehouse(run_date=quiet, lake_root=str(s["root"]), landing_root=str(s["landing"]),
                                **s["engine"])
    bronze = {x["table"]: x for x in summaries if x["stage"] == "bronze"}
    assert all(x["rows_in"] == 0 and x["files"] == 1 for x in bronze.values()), bronze
    assert Releases(Lake(str(s["root"]))).current().run_date == quiet
    delivered = Lake(str(s["root"])).read_log("_deliveries/snowflake/products")
    assert {(r["source_file"], r["records"]) for r in delivered.to_pylist() if r["run_date"] == quiet} == {
        (f"snowflake/products/{quiet}/no-changes.parquet", 0)}
    rerun = daily_lakehouse(run_date=quiet, lake_root=str(s["root"]), landing_root=str(s["landing"]), **s["engine"])
    assert all(x.get("new_files", 0) == 0 for x in rerun if x["stage"] == "bronze"), "an empty file is read once"

    later = quiet + timedelta(days=6)
    for e in LANDING_ENTITIES:
        if e.delivery == "daily":
            _empty_file(e, s["landing"] / e.source / e.entity / later.isoformat())
    with pytest.raises(GateFailedError) as raised:
        daily_lakehouse(run_date=later, lake_root=str(s["root"]), landing_root=str(s["landing"]), **s["engine"])
    msg = str(raised.value)
    stale = sorted(t for t in TABLES if f"{t} freshness.stale" in msg)
    assert stale == ["silver.fx_rates", "silver.products"], msg
    assert msg.count(f"ingested for {quiet}") == 2, "the empty deliveries were the newest"
    assert landing_entity("fx.rates").delivery == landing_entity("snowflake.products").delivery == "when_changed"
