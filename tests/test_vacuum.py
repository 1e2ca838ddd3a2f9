"""Vacuum (flows/vacuum.py) on the two-day lake the daily flow built on each engine: it deletes the files no
kept version reads, leaves every table's rows as they were, keeps the files of the current release and of the
versions the next incremental build reads; a rollback to a release whose files are gone is refused. Also
``lakehouse vacuum``, the run lock, and a lake on S3 (moto's server on loopback)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from lakes import assert_same_rows, clean_up_log, normalised
from typer.testing import CliRunner

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Releases
from lakehouse.backends.run_lock import LakeLockedError, RunLock
from lakehouse.contracts.catalog import table
from lakehouse.flows.cli import app
from lakehouse.flows.vacuum import existing_tables, held_vacuum, kept_versions, vacuum_lake
from lakehouse.tasks import customer_grain

runner = CliRunner()


def _data_files(root) -> set[str]:
    """Parquet files of the lake's tables (the lake's own logs, under ``_`` folders, are never vacuumed)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*.parquet")
            if not p.relative_to(root).parts[0].startswith("_")}


def _rows(root, lake: Lake) -> dict:
    return {spec.name: normalised(root, spec.name) for spec in existing_tables(lake)}


def test_vacuum_deletes_only_files_no_kept_version_reads(lake_copy):
    root = lake_copy["root"]
    lake = Lake(str(root))
    history = Releases(lake).history()  # day 1's release first (tests before may have rerun dates since)
    first, current = history[0], history[-1]
    rows, files = _rows(root, lake), _data_files(root)

    dry = vacuum_lake(lake, retention_hours=0, dry_run=True)
    assert _data_files(root) == files, "a dry run deletes nothing"
    done = vacuum_lake(lake, retention_hours=0)
    assert [(v.table, v.files) for v in done] == [(v.table, v.files) for v in dry]
    gone = files - _data_files(root)
    assert len(gone) == sum(v.files for v in done) > 0
    assert any(p.startswith("gold/customer_360/") for p in gone), "day 1's whole customer_360 is replaced"
    assert sum(v.bytes for v in done) > 0

    # Every table reads the same rows as before; the current release and the next build have their files.
    after = _rows(root, lake)
    assert set(after) == set(rows)
    for name, frame in rows.items():
        assert_same_rows(name, after[name], frame)
    assert all(not lake.missing_files(table(n), v) for n, v in current.versions.items())
    pinned = customer_grain.pinned_versions(lake)
    assert set(pinned) == {"gold.dim_customer", "silver.customer_versions", "silver.customer_crm_links"}
    assert all(not lake.missing_files(table(n), v) for n, vs in pinned.items() for v in vs)
    # Day 1's release is older than a 0-hour retention: its replaced files are gone, and rolling back to it is
    # refused with the reason instead of releasing versions that can no longer be read.
    assert lake.missing_files(table("gold.customer_360"), first.versions["gold.customer_360"])
    refused = runner.invoke(app, ["rollback", "--to", first.release_id, "--lake-root", str(root)])
    assert refused.exit_code == 2 and "vacuum deleted" in refused.output.replace("\n", "")
    assert Releases(lake).current().release_id == current.release_id

    assert sum(v.files for v in vacuum_lake(lake, retention_hours=0)) == 0, "a second vacuum finds nothing"


def test_vacuum_deletes_the_files_a_killed_write_left_once_older_than_the_retention(lake_copy):
    """A write killed before its commit leaves data files no log version names (orphans): a vacuum deletes them
    once older than the retention, keeps younger ones (a write may still be going on) and every file a version
    reads; the tables read the same rows."""
    import os

    root = lake_copy["root"]
    lake = Lake(str(root))
    rows = _rows(root, lake)
    orphans = {}
    for name in ("silver.orders", "gold.fact_orders", "bronze.crm.contacts"):
        folder = root / table(name).path
        source = next(p for p in sorted(folder.rglob("*.parquet")) if "_delta_log" not in p.parts)
        for age, hours in (("old", 30), ("young", 1)):
            orphan = source.with_name(f"part-00000-killed-{age}-write.c000.snappy.parquet")
            shutil.copyfile(source, orphan)  # what a killed writer leaves: a whole or cut-short Parquet file
            when = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
            os.utime(orphan, (when, when))
            orphans[orphan] = age
    files = _data_files(root)
    done = {v.table: v for v in vacuum_lake(lake, retention_hours=24)}
    assert all(done[n].files >= 1 for n in ("silver.orders", "gold.fact_orders", "bronze.crm.contacts"))
    assert {p: p.exists() for p in orphans} == {p: age == "young" for p, age in orphans.items()}
    assert files - _data_files(root) == {p.relative_to(root).as_posix() for p, a in orphans.items() if a == "old"}, \
        "only the old orphans went: every file a version reads (replaced less than 24 h ago) stayed"
    after = _rows(root, lake)
    for name, frame in rows.items():
        assert_same_rows(name, after[name], frame)


def test_the_next_incremental_build_reads_its_versions_after_a_vacuum(lake_copy):
    """A new version of one customer replaces the file of silver.customer_versions that dim_customer's recorded
    build read; the vacuum keeps that file, so the next build still finds the one changed customer."""
    from test_customer_grain import DIM, _ctx, _replace, _rows, _whole

    from lakehouse.tasks.gold import build_gold
    from tests.lakes import normalise

    engine = lake_copy["engine_impl"]
    lake = Lake(str(lake_copy["root"]))
    versions = _rows(engine, "silver.customer_versions")
    latest = max(versions, key=lambda v: (v["customer_id"], v["updated_at"]))
    newer = {**latest, "country": "IS", "updated_at": latest["updated_at"] + timedelta(hours=1),
             "_record_hash": "e" * 64}
    _replace(engine, "silver.customer_versions", [*versions, newer])
    done = {v.table: v for v in vacuum_lake(lake, retention_hours=0)}
    assert done["silver.customer_versions"].files == 0, "the file the recorded build read is kept"

    out = build_gold.fn(_ctx(lake_copy, "after-vacuum"), DIM, [])
    assert out["customers_rebuilt"] == 1
    assert_same_rows(DIM, normalise(engine.to_arrow(engine.scan(table(DIM))), DIM), _whole(engine))


def test_the_current_release_keeps_its_files_when_older_than_the_latest(pristine_lake, tmp_path):
    """Rolled back to day 1, the current release reads versions older than the latest: a vacuum keeps them."""
    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    lake = Lake(str(root))
    first, _ = Releases(lake).history()
    Releases(lake).rollback(first.release_id, run_id="test-rollback")
    kept = kept_versions(lake, retention_hours=0, now=datetime.now(UTC) + timedelta(seconds=1))
    assert kept["gold.customer_360"] == {first.versions["gold.customer_360"]}, "only the current (rolled back) one"

    done = {v.table: v for v in vacuum_lake(lake, retention_hours=0)}
    assert first.versions["gold.customer_360"] in done["gold.customer_360"].kept_versions
    assert all(not lake.missing_files(table(n), v) for n, v in first.versions.items())
    # Silver's day-1 files, which no kept version reads, went.
    assert done["silver.customers"].files > 0
    assert lake.missing_files(table("silver.customers"), 0)


def test_a_kept_version_whose_log_was_cleaned_up_is_named_and_does_not_stop_the_vacuum(pristine_lake, tmp_path):
    """delta-rs drops the log of versions older than the log retention once a checkpoint follows them; such a
    version (here the rolled-back-to release's customer_360) cannot be read, so the vacuum goes on without it."""
    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    lake = Lake(str(root))
    first, second = Releases(lake).history()
    Releases(lake).rollback(first.release_id, run_id="test-rollback")
    spec = table("gold.customer_360")
    old = first.versions[spec.name]
    latest = clean_up_log(root / spec.path)
    assert old < latest
    # A vacuum runs in a process of its own: a copy under another path is loaded afresh (this process keeps the
    # logs it loaded before, by path).
    root = tmp_path / "cleaned"
    shutil.copytree(tmp_path / "lake", root)
    lake = Lake(str(root))
    assert not lake.readable_version(spec, old) and lake.readable_version(spec, latest)
    before = normalised(root, spec.name)

    done = {v.table: v for v in vacuum_lake(lake, retention_hours=0)}
    assert done[spec.name].unreadable_versions == (old,)
    assert old not in done[spec.name].kept_versions
    assert done[spec.name].files > 0, "the old version's files went"
    assert_same_rows(spec.name, normalised(root, spec.name), before)
    assert done["gold.fact_orders"].unreadable_versions == ()
    assert first.versions["gold.fact_orders"] in done["gold.fact_orders"].kept_versions
    # Back to day 2's release, then day 1's again: refused, naming the version no one can read any more.
    Releases(lake).rollback(second.release_id, run_id="test-forward")
    with pytest.raises(ValueError, match=rf"cleaned up the log of gold.customer_360 version {old} "):
        Releases(lake).rollback(first.release_id, run_id="test-back-again")


def test_releases_within_the_retention_are_kept(pristine_lake):
    lake = Lake(str(pristine_lake["root"]))
    first, second = Releases(lake).history()
    now = datetime.now(UTC)
    within = kept_versions(lake, retention_hours=24, now=now)
    assert within["gold.fact_orders"] == {first.versions["gold.fact_orders"], second.versions["gold.fact_orders"]}
    later = kept_versions(lake, retention_hours=24, now=now + timedelta(days=2))
    assert later["gold.fact_orders"] == {second.versions["gold.fact_orders"]}, "the current release always"


def test_vacuum_waits_for_the_run_lock(pristine_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    lake = Lake(str(root))
    files = _data_files(root)
    with RunLock(lake).hold("daily-run-x", "daily-lakehouse 2026-11-02", wait_seconds=0), \
            pytest.raises(LakeLockedError, match="daily-run-x"):
        held_vacuum(RunLock(lake), retention_hours=0, dry_run=False, run_id="vacuum-test", wait_seconds=0)
    assert _data_files(root) == files
    assert sum(v.files for v in held_vacuum(RunLock(lake), retention_hours=0, dry_run=False, run_id="vacuum-test",
                                            wait_seconds=0)) > 0


def test_lakehouse_vacuum(pristine_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(pristine_lake["root"], root)
    files = _data_files(root)
    dry = runner.invoke(app, ["vacuum", "--retention-hours", "0", "--dry-run", "--lake-root", str(root)])
    assert dry.exit_code == 0, dry.output
    text = dry.output.replace("\n", " ")
    assert "would delete" in text and "gold.customer_360" in text and _data_files(root) == files
    real = runner.invoke(app, ["vacuum", "--retention-hours", "0", "--lake-root", str(root)])
    assert real.exit_code == 0, real.output
    deleted = len(files - _data_files(root))
    assert f"deleted {deleted:,} file(s)" in real.output and deleted > 0
    assert f"would delete {deleted:,} file(s)" in dry.output
    again = runner.invoke(app, ["vacuum", "--retention-hours", "0", "--lake-root", str(root)])
    assert "deleted 0 file(s)" in again.output
    # The default retention (168 h) keeps files replaced minutes ago.
    kept = runner.invoke(app, ["vacuum", "--lake-root", str(pristine_lake["root"]), "--dry-run"])
    assert kept.exit_code == 0 and "would delete 0 file(s)" in kept.output
    bad = runner.invoke(app, ["vacuum", "--retention-hours", "-1", "--lake-root", str(root)])
    assert bad.exit_code == 2 and "retention-hours" in bad.output
    empty = runner.invoke(app, ["vacuum", "--lake-root", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "nothing to vacuum" in " ".join(empty.output.split())  # wrapped to the terminal


@pytest.mark.slow
def test_vacuum_on_an_s3_lake(aws, pristine_lake, monkeypatch):
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # moto's endpoint is plain HTTP on loopback
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="vacuum-bucket")
    local = pristine_lake["root"]
    for f in local.rglob("*"):
        if f.is_file() and "_results" not in f.parts and "_lineage" not in f.parts:
            s3.upload_file(str(f), "vacuum-bucket", f"lake/{f.relative_to(local).as_posix()}")
    lake = Lake("s3://vacuum-bucket/lake")
    first, second = Releases(lake).history()

    def keys() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="vacuum-bucket", Prefix="lake/")
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = keys()
    done = vacuum_lake(lake, retention_hours=0)
    gone = before - keys()
    assert len(gone) == sum(v.files for v in done) > 0 and sum(v.bytes for v in done) > 0
    assert all(not lake.missing_files(table(n), v) for n, v in second.versions.items())
    assert lake.missing_files(table("gold.customer_360"), first.versions["gold.customer_360"])
    with pytest.raises(ValueError, match="vacuum deleted"):
        Releases(lake).rollback(first.release_id, run_id="test")
