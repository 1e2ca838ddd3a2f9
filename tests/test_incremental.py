"""Every day forever: incremental gold, reruns in any order, backfills, retries that resume, one run at a time,
and Kafka micro-batches applied exactly once. On the laptop engine, through the real flows and a Prefect server.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import ROOT
from deltalake import DeltaTable
from lakes import normalised
from typer.testing import CliRunner

from lakehouse.backends import Lake
from lakehouse.backends.checkpoints import Checkpoints
from lakehouse.backends.run_lock import RunLock
from lakehouse.backends.run_log import RunLog
from lakehouse.contracts.catalog import TABLES, table, tables
from lakehouse.contracts.landing import ORDER_EVENTS
from lakehouse.flows.cli import app
from lakehouse.tasks.context import RunContext

START = date(2026, 11, 1)
START_TS = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
DAYS = 5
runner = CliRunner()


def _day(i: int) -> date:
    return START + timedelta(days=i)


def content_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every table's rows (normalised: sorted, run ids and ingest times left out)."""
    out = {}
    for name in sorted(TABLES):
        df = normalised(root, name)
        if df is not None:
            out[name] = hashlib.sha256(df.write_csv().encode()).hexdigest()
    return out


def _files_of_partition(root: Path, name: str, version: int, day: date) -> set[str]:
    dt = DeltaTable(str(root / table(name).path), version=version)
    adds = pa.table(dt.get_add_actions(flatten=True))
    return {p for p, d in zip(adds.column("path").to_pylist(), adds.column("partition.order_date").to_pylist(),
                              strict=True) if d == day}


@pytest.fixture(scope="module")
def five_days(prefect_harness, tmp_path_factory):
    """A lake built day by day (2026-11-01 .. 05) by the daily flow, with each day's gold versions; built once
    per test run (the xdist workers share it: copy it before writing)."""
    from lakehouse.backends.sources.sample import generate
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.testing.plugin import shared_once

    def build(base: Path) -> dict:
        landing, root = base / "landing", base / "lake"
        generate(landing, days=DAYS, scale=0.05, seed=7, start=START)
        versions = {}
        for i in range(DAYS):
            daily_lakehouse(run_date=_day(i), lake_root=str(root), landing_root=str(landing))
            versions[_day(i)] = Lake(str(root)).version(table("gold.fact_orders"))
        return {"landing": landing, "root": root, "fact_versions": versions}

    return shared_once(tmp_path_factory, "incremental-five-days", build)


def _copy(five_days, tmp_path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(five_days["root"], root)
    return root


def test_incremental_gold_rewrites_only_changed_order_dates_and_equals_a_whole_rebuild(five_days, tmp_path):
    from lakehouse.flows.daily import publish

    root = _copy(five_days, tmp_path)
    before = {t.name: normalised(root, t.name) for t in tables("gold")}
    # Day 5 rewrote the fact partitions of the orders its batches changed, not the first day's.
    v4, v5 = five_days["fact_versions"][_day(3)], five_days["fact_versions"][_day(4)]
    assert _files_of_partition(root, "gold.fact_orders", v4, _day(0)) == \
        _files_of_partition(root, "gold.fact_orders", v5, _day(0)) != set()
    assert _files_of_partition(root, "gold.fact_orders", v4, _day(3)) != \
        _files_of_partition(root, "gold.fact_orders", v5, _day(3)), "late events of day 4's orders arrived on day 5"
    ctx = RunContext(run_date=_day(4), run_id="whole-rebuild", started_at=START_TS, overrides={"lake_root": str(root)})
    publish(ctx, whole=True)
    for name, df in before.items():
        after = normalised(root, name)
        assert df is not None and after is not None and df.height > 0
        assert df.equals(after), f"{name}: the incremental days differ from a whole rebuild"


def test_rerunning_dates_in_any_order_leaves_every_table_identical(five_days, tmp_path):
    from lakehouse.flows.daily import daily_lakehouse

    root = _copy(five_days, tmp_path)
    clean = content_hashes(root)
    for i in (2, 0, 4):
        daily_lakehouse(run_date=_day(i), lake_root=str(root), landing_root=str(five_days["landing"]))
    assert content_hashes(root) == clean
    assert len(RunLog(Lake(str(root))).history()) == DAYS + 3


def test_a_late_customer_version_gives_the_same_history_and_facts_as_in_order(five_days, tmp_path):
    """Day 2's customer updates delivered two days late, after day 3's newer versions: the same dim_customer
    history and the same facts as the lake that got them in order."""
    from lakehouse.flows.daily import daily_lakehouse

    late = tmp_path / "late-landing"
    shutil.copytree(five_days["landing"], late)
    folder = late / "snowflake" / "customers"
    known = set(pl.read_parquet(folder / _day(0).isoformat() / "customers.parquet")["customer_id"].to_list())
    day2 = pl.read_parquet(folder / _day(1).isoformat() / "customers.parquet")
    updates = day2.filter(pl.col("customer_id").is_in(sorted(known)))  # updates, not day 2's sign-ups
    assert updates.height > 0
    day2.filter(~pl.col("customer_id").is_in(sorted(known))).write_parquet(folder / _day(1).isoformat() / "customers.parquet")
    updates.write_parquet(folder / _day(3).isoformat() / "late-customers.parquet")
    root = tmp_path / "lake-late"
    for i in range(DAYS):
        daily_lakehouse(run_date=_day(i), lake_root=str(root), landing_root=str(late))
    for name in ("silver.customer_versions", "gold.dim_customer", "gold.fact_orders"):
        a, b = normalised(five_days["root"], name), normalised(root, name)
        assert a is not None and b is not None
        keep = [c for c in a.columns if c != "_source_file"]
        assert a.select(keep).equals(b.select(keep)), f"{name} differs when versions arrive late"
    dim = normalised(root, "gold.dim_customer")
    assert dim.group_by("customer_id").len().filter(pl.col("len") > 1).height > 0, "customers with history"
    assert dim.filter(pl.col("is_current")).height == dim["customer_id"].n_unique()
    # Every order carries the version valid when it was placed (or the first, for an order before it).
    versions = dim.select("customer_sk", "valid_from", "valid_to",
                          (pl.col("valid_from") == pl.col("valid_from").min().over("customer_id")).alias("first"))
    fact = normalised(root, "gold.fact_orders").join(versions, on="customer_sk", how="left")
    ok = ((pl.col("valid_from") <= pl.col("order_ts")) & (pl.col("valid_to").is_null() | (pl.col("order_ts") < pl.col("valid_to")))
          | (pl.col("first") & (pl.col("order_ts") < pl.col("valid_from"))))
    assert fact.height > 0 and fact.filter(~ok).height == 0


def test_backfill_runs_dates_in_order_skips_done_dates_and_force_runs_them_again(five_days, tmp_path):
    root = tmp_path / "lake"
    args = ["--lake-root", str(root), "--landing", str(five_days["landing"])]
    first = runner.invoke(app, ["backfill", "--from", "2026-11-01", "--to", "2026-11-02", *args])
    assert first.exit_code == 0, first.output
    log = RunLog(Lake(str(root)))
    assert [r["run_date"] for r in log.history()] == [_day(0), _day(1)]
    again = runner.invoke(app, ["backfill", "--from", "2026-11-01", "--to", "2026-11-03", *args])
    assert again.exit_code == 0, again.output
    assert "2 date(s) already done, skipped" in again.output
    assert [r["run_date"] for r in log.history()] == [_day(0), _day(1), _day(2)]
    forced = runner.invoke(app, ["backfill", "--from", "2026-11-02", "--to", "2026-11-02", "--force", *args])
    assert forced.exit_code == 0, forced.output
    assert [(r["run_date"], r["forced"]) for r in log.history()][-1] == (_day(1), True)
    bad = runner.invoke(app, ["backfill", "--from", "2026-11-03", "--to", "2026-11-01", *args])
    assert bad.exit_code == 2 and "expected --from on or before --to" in bad.output


def test_the_flow_and_the_command_walk_a_backfill_plan_through_one_loop():
    from lakehouse.flows.backfill import run_backfill

    ran, steps = [], []
    plan = [(_day(0), True), (_day(1), False), (_day(2), False)]
    report = run_backfill(plan, ran.append, lambda i, total, day, status: steps.append((i, total, day, status)))
    assert ran == [_day(1), _day(2)], "skipped dates do not run; the others run in order"
    assert steps == [(1, 3, _day(0), "skipped"), (2, 3, _day(1), "running"), (2, 3, _day(1), "ran"),
                     (3, 3, _day(2), "running"), (3, 3, _day(2), "ran")]
    assert [r["status"] for r in report] == ["skipped", "ran", "ran"]


def test_a_retried_flow_run_reruns_only_the_failed_task_and_what_follows(five_days, tmp_path, monkeypatch):
    """A task fails on a rerun of day 5; the flow run's retry resumes at that task. The
    retried lake has exactly the commits and the content of a clean rerun, and no completed task ran twice."""
    import lakehouse.tasks.transforms.gold as gold_module
    from lakehouse.flows.daily import daily_lakehouse

    clean, retried = tmp_path / "clean", tmp_path / "retried"
    for root in (clean, retried):
        shutil.copytree(five_days["root"], root)
    kwargs = {"run_date": _day(4), "landing_root": str(five_days["landing"])}
    daily_lakehouse(lake_root=str(clean), **kwargs)
    versions_before = {t.name: Lake(str(retried)).version(t) for t in TABLES.values()}
    real = gold_module.build_customer_360
    calls = {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:  # not transient: the task is not retried, the flow run fails
            raise RuntimeError("simulated: a bug, fixed before the retry")
        return real(*args, **kw)

    monkeypatch.setattr(gold_module, "build_customer_360", failing)
    state = daily_lakehouse.with_options(retries=1, retry_delay_seconds=0)(lake_root=str(retried), return_state=True,
                                                                            **kwargs)
    assert state.is_completed(), state
    assert calls["n"] == 2, "the failed task ran again in the retry, once"
    assert content_hashes(retried) == content_hashes(clean)
    for name, before in versions_before.items():
        commits_clean = (Lake(str(clean)).version(TABLES[name]) or -1) - (before or -1)
        commits_retried = (Lake(str(retried)).version(TABLES[name]) or -1) - (before or -1)
        assert commits_retried == commits_clean, f"{name}: {commits_retried} commits in the retried run, {commits_clean} clean"
    runs = asyncio.run(_task_runs_under(state.state_details.flow_run_id))
    completed = [name for name, st in runs if st == "Completed"]
    assert len(completed) == len(set(completed)), f"a task completed twice: {sorted(completed)}"
    assert {name for name, st in runs if st == "Cached"} >= {"silver-silver.orders", "gold-gold.fact_orders"}
    assert ("gold-gold.customer_360", "Failed") in runs and "gold-gold.customer_360" in completed


async def _task_runs_under(flow_run_id) -> list[tuple[str, str]]:
    """(name, state) of every task run of a flow run and its subflow runs, all attempts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id, *(c.id for c in children)]
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        # Tasks without a task_run_name get a random suffix: "gold-plan-3f1" -> "gold-plan".
        return [(r.name.rsplit("-", 1)[0] if r.name.startswith(("gold-plan", "release-gold", "silver-links"))
                 else r.name, r.state_name) for r in runs]


def test_two_runs_of_a_date_never_interleave(five_days, tmp_path):
    """Two processes start the same date at once: both wait for the lake's run lock; once it is free, one runs and
    the other waits for it; their write windows do not overlap and the lake equals one clean rerun.

    The test holds the lock while the two processes start, so that they really are both waiting at the same time
    (left to themselves, one process could finish before the other has imported Prefect)."""
    from prefect.settings import PREFECT_API_URL

    root = _copy(five_days, tmp_path)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", "PREFECT_LOGGING_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "lakehouse.flows.cli", "run", "--date", _day(4).isoformat(), "--lake-root", str(root),
           "--landing", str(five_days["landing"])]
    logs = [tmp_path / f"run-{i}.log" for i in (1, 2)]
    waiting = "waiting for the lake's run lock"
    with RunLock(Lake(str(root))).hold("the-test", "holding the lake while both runs start", wait_seconds=0):
        procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
                 for log in logs]
        deadline = time.monotonic() + 120
        while not all(waiting in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [log.read_text()[-3000:] for log in logs]
            time.sleep(0.2)
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [log.read_text()[-3000:] for log in logs]
    runs = [r for r in RunLog(Lake(str(root))).history() if r["run_date"] == _day(4)][-2:]
    assert len(runs) == 2 and runs[0]["run_id"] != runs[1]["run_id"]
    first, second = sorted(runs, key=lambda r: r["locked_at"])
    assert first["finished_at"] <= second["locked_at"], "the two runs wrote the lake at the same time"
    assert not (root / "_locks" / "runs.json").exists()
    assert content_hashes(root) == content_hashes(five_days["root"])


def test_kafka_micro_batches_apply_exactly_once_when_a_run_dies_before_its_checkpoint(five_days, tmp_path,
                                                                                     monkeypatch):
    from lakehouse.tasks.bronze import ingest_entity

    root = tmp_path / "lake"
    ctx = RunContext(run_date=START, run_id="r1", started_at=START_TS,
                     overrides={"lake_root": str(root), "landing_root": str(five_days["landing"]),
                                "stream_commit_max_files": 1})
    files = sorted((five_days["landing"] / "kafka" / "order_events" / START.isoformat()).glob("*.jsonl"))
    assert len(files) >= 2
    real = Checkpoints.record

    def dies(self, *args, **kwargs):
        raise SystemExit("simulated: the run died after the bronze commit, before the checkpoint")

    monkeypatch.setattr(Checkpoints, "record", dies)
    with pytest.raises(SystemExit):
        ingest_entity.fn(ctx, ORDER_EVENTS.name)
    lake = Lake(str(root))
    spec = table("bronze.kafka.order_events")
    assert lake.version(spec) == 0, "the first micro-batch file was committed"
    assert Checkpoints(lake, ORDER_EVENTS).history() == []
    monkeypatch.setattr(Checkpoints, "record", real)
    summary = ingest_entity.fn(ctx.model_copy(update={"run_id": "r2"}), ORDER_EVENTS.name)
    assert summary["recovered_files"] == 1 and summary["new_files"] == len(files) - 1
    history = Checkpoints(lake, ORDER_EVENTS).history()
    applied = [f for row in history for f in row["files"]]
    assert sorted(applied) == sorted(f"kafka/order_events/{START}/{f.name}" for f in files)
    assert len(applied) == len(set(applied)) and history[0]["recovered"] and not history[1]["recovered"]
    assert [row["lines"] for row in history] == [[sum(1 for _ in f.open())] for f in files]
    # Bronze holds exactly what one clean ingest holds: every line once.
    clean_root = tmp_path / "clean"
    ingest_entity.fn(ctx.model_copy(update={"overrides": {**ctx.overrides, "lake_root": str(clean_root)}}),
                     ORDER_EVENTS.name)
    got, want = normalised(root, spec.name), normalised(clean_root, spec.name)
    assert got.equals(want)
    assert sum(r["rows"] for r in history) == got.height
    # Nothing is applied twice by a later run.
    again = ingest_entity.fn(ctx.model_copy(update={"run_id": "r3"}), ORDER_EVENTS.name)
    assert again["new_files"] == 0 and again["rows_written"] == 0 and lake.version(spec) == len(files) - 1

