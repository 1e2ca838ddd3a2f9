"""The Prefect deployments for real: a Prefect server on loopback, the work pools, ``prefect deploy --all`` of
``deployments/prefect.yaml``, a process worker (all started by ``deployments/local_stack.py``, as
``make deploy-local`` does, and stopped by process id), then ``prefect deployment run`` and, after a run that
fails in a task, ``prefect flow-run retry``; then the vacuum deployment."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from lakes import assert_same_rows, normalised

from lakehouse.backends.lake import Lake
from lakehouse.backends.releases import Releases
from lakehouse.backends.run_lock import RunLock
from lakehouse.backends.run_log import RunLog
from lakehouse.contracts.catalog import TABLES, table
from lakehouse.tasks.ledger import read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect-stack")]  # one worker: one stack

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from conftest import _free_port

    from lakehouse.deployments import local_stack

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_WORKER_QUERY_SECONDS", "2")  # the worker looks for runs every 2 s, not 10
        state = local_stack.up(port=port, home=home)
        try:
            yield {"env": local_stack.stack_env(home, port), **state}
        finally:
            stopped = local_stack.down(home)
            assert state["server_pid"] in stopped


def _prefect(stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, *args], env=stack["env"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_deploy_run_fail_and_retry_through_a_worker(stack, tmp_path, daily_lakes):
    from lakehouse.backends.sources.sample import generate

    listed = _prefect(stack, "deployment", "ls")
    assert listed.returncode == 0, listed.stderr
    for name in ("daily-lakehouse/local", "daily-lakehouse/emr", "backfill-lakehouse/backfill",
                 "publish-snowflake/snowflake", "vacuum-lakehouse/vacuum"):
        assert name in listed.stdout, listed.stdout
    shown = _prefect(stack, "deployment", "inspect", "daily-lakehouse/local")
    assert "0 6 * * *" in shown.stdout and "lakehouse-local" in shown.stdout

    landing, lake_root = tmp_path / "landing", tmp_path / "lake"
    generate(landing, days=2, scale=0.03, seed=7, start=DAY1)
    params = ["-p", f"lake_root={lake_root}", "-p", f"landing_root={landing}"]
    watch = ["--watch", "--watch-interval", "1"]

    # 1. A run of the deployment, picked up by the worker, is killed (SIGKILL) in the middle: the worker reports
    # it Crashed, its run lock's lease is left behind; `prefect flow-run retry` (the UI's Retry) resumes it, takes
    # its own lock back at once, and the lake converges to the one a clean run of the date leaves.
    started = _prefect(stack, "deployment", "run", "daily-lakehouse/local", "-p", f"run_date={DAY1}", *params)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    lake = Lake(str(lake_root))
    deadline = time.monotonic() + 300
    while not any(r["run_id"] == run_id and r["status"] == "completed" and r["task"].startswith("silver-")
                  for r in _ledger(lake)):
        assert time.monotonic() < deadline, "the run never got to silver"
        time.sleep(0.5)
    killed = _kill_flow_run(run_id)
    assert killed, "the flow run's process was found and killed"
    _wait_state(stack, run_id, "CRASHED")
    assert RunLock(lake).holder()["run_id"] == run_id, "the killed run's lease is left behind"
    status = _lakehouse("status", "--lake-root", str(lake_root))
    assert f"run lock: held by run {run_id}" in status and "holds the run lock" in status, status
    assert DAY1 not in RunLog(lake).done_dates() and Releases(lake).current() is None
    time.sleep(5)  # the worker has done with the killed process before the run is scheduled again
    retried = _prefect(stack, "flow-run", "retry", run_id)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    _wait_completed(stack, run_id, lake_root, DAY1)
    assert RunLock(lake).holder() is None
    assert Releases(lake).current().run_date == DAY1
    clean = daily_lakes("polars")["first_day"]
    for name in TABLES:
        want, got = normalised(clean, name), normalised(lake_root, name)
        assert (want is None) == (got is None), name
        if want is not None:
            assert_same_rows(name, got, want)

    # 2. A run whose customer_segments task cannot write (a file where its table goes) fails in that task.
    segments = lake_root / "gold" / "customer_segments"
    aside = tmp_path / "segments-aside"
    shutil.move(segments, aside)
    segments.write_text("not a table")
    second = _prefect(stack, "deployment", "run", "daily-lakehouse/local", "-p", f"run_date={DAY2}", *params, *watch)
    assert second.returncode != 0 and "Failed" in second.stdout
    assert Releases(Lake(str(lake_root))).current().run_date == DAY1, "a failed run releases nothing"
    failed_rows = [r for r in read_ledger(Lake(str(lake_root))) if r["run_date"] == DAY2]
    run_id = failed_rows[0]["run_id"]
    assert {r["task"] for r in failed_rows if r["status"] == "failed"} == {"gold-gold.customer_segments"}

    # 3. Fixed, the same flow run is retried with the CLI; the worker resumes it after the completed tasks.
    segments.unlink()
    shutil.move(aside, segments)
    retried = _prefect(stack, "flow-run", "retry", run_id)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    _wait_completed(stack, run_id, lake_root, DAY2)
    assert Releases(Lake(str(lake_root))).current().run_date == DAY2

    rows = [r for r in read_ledger(Lake(str(lake_root))) if r["run_id"] == run_id]
    completed: dict[str, int] = {}
    for r in rows:
        if r["status"] == "completed":
            completed[r["task"]] = completed.get(r["task"], 0) + 1
    # Every task ran to completion exactly once in this flow run: the retry re-ran only the failed task and
    # what follows it (the release); the bronze, silver and other gold tasks were cached, not run again.
    assert set(completed.values()) == {1}
    assert len(completed) == 30
    retry_started = min(r["started_at"] for r in rows if r["task"] == "gold-gold.customer_segments"
                        and r["status"] == "completed")
    ran_in_retry = {r["task"] for r in rows if r["started_at"] >= retry_started}
    assert ran_in_retry == {"gold-gold.customer_segments", "release-gold"}

    # 4. The vacuum deployment, run by the worker, deletes the files day 2 replaced; the release still reads.
    before = set(lake_root.rglob("*.parquet"))
    swept = _prefect(stack, "deployment", "run", "vacuum-lakehouse/vacuum", "-p", f"lake_root={lake_root}",
                     "-p", "retention_hours=0", *watch)
    assert swept.returncode == 0 and "Completed" in swept.stdout, swept.stdout[-3000:] + swept.stderr[-3000:]
    gone = before - set(lake_root.rglob("*.parquet"))
    assert any("gold/customer_360/" in str(p) for p in gone), "customer_360 is rewritten whole: day 1's file goes"
    lake = Lake(str(lake_root))
    current = Releases(lake).current()
    assert all(not lake.missing_files(table(name), v) for name, v in current.versions.items())


def _lakehouse(*args: str) -> str:
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    return done.output


def _ledger(lake: Lake) -> list[dict]:
    try:
        return read_ledger(lake)
    except Exception:  # noqa: BLE001 - not written yet, or a commit in flight
        return []


def _kill_flow_run(run_id: str) -> list[int]:
    """SIGKILL the processes the worker started for flow run ``run_id`` (found by the run id in their
    environment); their pids."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ.split(b"\0"):
            os.kill(int(proc.name), signal.SIGKILL)
            killed.append(int(proc.name))
    return killed


def _state(stack, run_id: str) -> str:
    """The flow run's state type, from the server's REST API (a ``prefect flow-run inspect`` is a Python process
    of 3-4 s of CPU, taken from the run being waited for)."""
    import httpx

    got = httpx.get(f"{stack['env']['PREFECT_API_URL']}/flow_runs/{run_id}", timeout=30)
    got.raise_for_status()
    return got.json()["state"]["type"]


def _wait_state(stack, run_id: str, state: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (now := _state(stack, run_id)) != state:
        assert time.monotonic() < deadline, f"the flow run did not become {state}, it is {now}"
        time.sleep(1)


def _deployment_run(stack, day: date, lake_root: Path, landing: Path) -> subprocess.CompletedProcess[str]:
    return _prefect(stack, "deployment", "run", "daily-lakehouse/local", "-p", f"run_date={day}",
                    "-p", f"lake_root={lake_root}", "-p", f"landing_root={landing}", "--watch", "--watch-interval", "1")


def _wait_completed(stack, run_id: str, lake_root: Path, day: date) -> None:
    """Wait (5 minutes at most) until the retried flow run ``run_id`` has recorded ``day`` done and ended
    COMPLETED: the run log is written before the flow run ends (its summary artifact comes after)."""
    deadline = time.monotonic() + 300
    resumed = False  # the server may answer with the state before the retry for a moment
    while True:
        state = _state(stack, run_id)
        if state == "COMPLETED" and day in RunLog(Lake(str(lake_root))).done_dates():
            return
        resumed = resumed or state in ("SCHEDULED", "PENDING", "RUNNING")
        if time.monotonic() >= deadline or (resumed and state in ("FAILED", "CRASHED")):
            inspect = _prefect(stack, "flow-run", "inspect", run_id).stdout
            logs = _prefect(stack, "flow-run", "logs", run_id)
            pytest.fail(f"the retried run did not complete ({state}, 5 minutes at most): {inspect[-3000:]}\n"
                        f"{logs.stdout[-4000:]}{logs.stderr[-2000:]}")
        time.sleep(1)


def test_a_run_failed_at_the_gate_and_retried_after_the_fix_takes_the_orders_in(stack, tmp_path):
    """Day 2's orders all point at customers who signed up on day 2, whose file comes late: the deployment's
    run stops at the silver gate. The file is delivered and the failed flow run retried with ``prefect flow-run
    retry`` (the Prefect UI's Retry does the same): the worker resumes it, the orders are in silver and gold and
    out of the quarantine, once. (That such a retry equals a clean run of the date, table for table, is shown in
    process on both engines by tests/test_rerun_after_fix.py.)"""
    import polars as pl
    from lakes import normalised

    from lakehouse.backends.sources.sample import generate

    landing, lake_root = tmp_path / "landing", tmp_path / "lake"
    generate(landing, days=2, scale=0.01, seed=11, start=DAY1)
    customers = landing / "snowflake" / "customers"
    known = set(pl.read_parquet(customers / DAY1.isoformat() / "customers.parquet")["customer_id"].to_list())
    on_time = customers / DAY2.isoformat() / "customers.parquet"
    delivered = pl.read_parquet(on_time)
    new = sorted(set(delivered["customer_id"].to_list()) - known)
    late = customers / DAY2.isoformat() / "customers-signups.parquet"  # the day's sign-ups, in a file of their own
    delivered.filter(pl.col("customer_id").is_in(new)).write_parquet(late)
    delivered.filter(~pl.col("customer_id").is_in(new)).write_parquet(on_time)
    orders_file = landing / "snowflake" / "orders" / DAY2.isoformat() / "orders.parquet"
    orders = pl.read_parquet(orders_file)
    orders.with_columns(pl.Series("customer_id", [new[i % len(new)] for i in range(orders.height)],
                                  dtype=orders.schema["customer_id"])).write_parquet(orders_file)
    withheld = tmp_path / "withheld.parquet"
    shutil.move(late, withheld)

    first = _deployment_run(stack, DAY1, lake_root, landing)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    failed = _deployment_run(stack, DAY2, lake_root, landing)
    assert failed.returncode != 0 and "Failed" in failed.stdout
    rows = [r for r in read_ledger(Lake(str(lake_root))) if r["run_date"] == DAY2]
    assert {r["task"] for r in rows if r["status"] == "failed"} == {"gate-silver"}
    run_id = rows[0]["run_id"]

    stuck = normalised(lake_root, "quarantine.silver.orders").filter(pl.col("run_date") == DAY2)
    assert stuck.filter(pl.col("rule") == "ref.unknown_customer").height > 0.9 * orders.height

    shutil.copy(withheld, late)  # the fix: the late file is delivered
    retried = _prefect(stack, "flow-run", "retry", run_id)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    _wait_completed(stack, run_id, lake_root, DAY2)

    quarantined = normalised(lake_root, "quarantine.silver.orders").filter(pl.col("run_date") == DAY2)
    assert quarantined.filter(pl.col("rule") == "ref.unknown_customer").height == 0
    assert quarantined.height == quarantined.select("record_hash", "source_file", "occurrence").n_unique()
    taken = set(normalised(lake_root, "silver.orders")["order_id"].to_list())
    assert taken >= set(orders["order_id"].to_list()) - set(quarantined["record"].str.extract(
        r'"order_id":"([^"]*)"').to_list())
    fact = set(normalised(lake_root, "gold.fact_orders")["order_id"].to_list())
    assert fact >= taken & set(orders["order_id"].to_list())
    assert Releases(Lake(str(lake_root))).current().run_date == DAY2
    again = [r for r in read_ledger(Lake(str(lake_root))) if r["run_id"] == run_id and r["status"] == "completed"]
    ran_twice = {t for t in {r["task"] for r in again} if sum(r["task"] == t for r in again) > 1}
    assert {"bronze-snowflake.customers", "silver-silver.customers", "silver-silver.orders"} <= ran_twice
    assert "bronze-snowflake.orders" not in ran_twice and "silver-silver.products" not in ran_twice
