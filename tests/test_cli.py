"""The ``lakehouse`` CLI and the settings model: clear errors for bad input, env-var overrides, real output."""

from __future__ import annotations

from datetime import UTC, date

import pytest
from typer.testing import CliRunner

from lakehouse.deployments.settings import SettingsError, load_settings
from lakehouse.flows.cli import app

runner = CliRunner()


def test_settings_default_to_local_and_take_nested_env_overrides(monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_ENV", raising=False)
    s = load_settings()
    assert (s.env, s.backend, s.lake_root, s.fx_window_days) == ("local", "polars", "./lake", 4)
    monkeypatch.setenv("LAKEHOUSE_SNOWFLAKE__HOST", "127.0.0.1")
    monkeypatch.setenv("LAKEHOUSE_FX_WINDOW_DAYS", "2")
    s = load_settings(lake_root="/tmp/elsewhere")
    assert (s.snowflake.host, s.fx_window_days, s.lake_root) == ("127.0.0.1", 2, "/tmp/elsewhere")


def test_bad_settings_name_the_field_and_never_echo_the_key(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_FX_WINDOW_DAYS", "soon")
    with pytest.raises(SettingsError, match="fx_window_days"):
        load_settings()
    monkeypatch.delenv("LAKEHOUSE_FX_WINDOW_DAYS")
    monkeypatch.setenv("LAKEHOUSE_HMAC_KEY", "short-canary")
    with pytest.raises(SettingsError, match="hmac_key") as info:
        load_settings()
    assert "short-canary" not in str(info.value)
    with pytest.raises(SettingsError, match="expected an environment among"):
        load_settings("prod-typo")


def test_run_rejects_a_bad_date():
    result = runner.invoke(app, ["run", "--date", "2026-13-01"])
    assert result.exit_code == 2
    assert "expected --date as YYYY-MM-DD" in result.output


def test_run_rejects_a_missing_landing_folder(tmp_path):
    result = runner.invoke(app, ["run", "--date", "2026-11-01", "--landing", str(tmp_path / "none"),
                                 "--lake-root", str(tmp_path / "lake")])
    assert result.exit_code == 2
    assert "expected a landing folder" in result.output


def test_run_rejects_an_unwritable_lake(tmp_path):
    (tmp_path / "landing").mkdir()
    result = runner.invoke(app, ["run", "--date", "2026-11-01", "--landing", str(tmp_path / "landing"),
                                 "--lake-root", "/proc/lake"])
    assert result.exit_code == 2
    assert "expected a writable lake root" in result.output


def test_show_rejects_an_unknown_table_and_lists_known_ones(tmp_path):
    result = runner.invoke(app, ["show", "gold.fact_order", "--lake-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "gold.fact_orders" in result.output


def test_generate_append_adds_the_next_day_and_says_how_to_run_it(tmp_path):
    landing = tmp_path / "landing"
    first = runner.invoke(app, ["generate", "--days", "2", "--scale", "0.01", "--start", "2026-11-05",
                                "--out", str(landing)])
    assert first.exit_code == 0, first.output
    before = {p: p.read_bytes() for p in landing.rglob("*.parquet")}
    added = runner.invoke(app, ["generate", "--append", "--out", str(landing)])
    assert added.exit_code == 0, added.output
    assert "2026-11-07" in added.output and "lakehouse run --date 2026-11-07" in " ".join(added.output.split())
    assert sorted(p.name for p in (landing / "snowflake" / "orders").iterdir()) == [
        "2026-11-05", "2026-11-06", "2026-11-07"]
    assert all(p.read_bytes() == b for p, b in before.items())
    two = runner.invoke(app, ["generate", "--append", "--days", "2", "--out", str(landing)])
    assert two.exit_code == 0 and (landing / "snowflake" / "orders" / "2026-11-09").is_dir()
    clash = runner.invoke(app, ["generate", "--append", "--seed", "3", "--out", str(landing)])
    assert clash.exit_code == 2 and "expected no --seed with --append" in " ".join(clash.output.split())
    missing = runner.invoke(app, ["generate", "--append", "--out", str(tmp_path / "elsewhere")])
    assert missing.exit_code == 2 and "expected a landing folder written by" in " ".join(missing.output.split())


def test_generate_tables_and_show_on_a_real_lake(tmp_path):
    """generate writes files; after the stages run, tables and show print the real rows."""
    from datetime import datetime

    from lakehouse.contracts.catalog import build_order, conform_order
    from lakehouse.tasks.bronze import ingest_entity
    from lakehouse.tasks.context import RunContext
    from lakehouse.tasks.gold import build_gold
    from lakehouse.tasks.release import release_gold
    from lakehouse.tasks.silver import link_crm, refine_table

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    result = runner.invoke(app, ["generate", "--days", "1", "--scale", "0.01", "--out", str(landing)])
    assert result.exit_code == 0, result.output
    assert (landing / "snowflake" / "orders" / "2026-11-01" / "orders.parquet").is_file()
    ctx = RunContext(run_date=date(2026, 11, 1), run_id="cli-test", started_at=datetime.now(UTC),
                     overrides={"lake_root": str(lake), "landing_root": str(landing)})
    from lakehouse.contracts.landing import LANDING_ENTITIES

    for e in LANDING_ENTITIES:
        ingest_entity.fn(ctx, e.name)
    for name in conform_order():
        refine_table.fn(ctx, name)
    link_crm.fn(ctx)
    versions = {name: build_gold.fn(ctx, name)["version"] for name in build_order("gold")}
    unreleased = runner.invoke(app, ["show", "gold.fact_orders", "--lake-root", str(lake)])
    assert unreleased.exit_code == 2 and "expected a gold release" in unreleased.output, "written is not released"
    from prefect.logging import disable_run_logger

    with disable_run_logger():
        release_gold.fn(ctx, versions)
    listing = runner.invoke(app, ["tables", "--lake-root", str(lake)])
    assert listing.exit_code == 0, listing.output
    engine = ctx.engine()
    from lakehouse.contracts.catalog import table

    fact_rows = engine.count(engine.scan(table("gold.fact_orders")))
    assert fact_rows > 0
    assert f"{fact_rows:,}" in listing.output
    shown = runner.invoke(app, ["show", "gold.fact_orders", "--limit", "3", "--lake-root", str(lake)])
    assert shown.exit_code == 0, shown.output
    first = min(engine.to_arrow(engine.scan(table("gold.fact_orders")).select("order_id")).column("order_id").to_pylist())
    assert "first 3 rows" in shown.output and first in shown.output


def test_run_without_an_hmac_key_says_where_to_set_it(monkeypatch, tmp_path):
    monkeypatch.setenv("LAKEHOUSE_ENV", "emr")  # emr.toml carries no key, by design
    monkeypatch.delenv("LAKEHOUSE_HMAC_KEY", raising=False)
    result = runner.invoke(app, ["run", "--date", "2026-11-01", "--lake-root", str(tmp_path / "lake"),
                                 "--landing", str(tmp_path)])
    assert result.exit_code == 2
    assert "expected hmac_key" in result.output and "LAKEHOUSE_HMAC_KEY" in result.output
    assert not (tmp_path / "lake").exists()


def test_sources_extract_names_what_is_wrong(monkeypatch, tmp_path):
    where = ["--lake-root", str(tmp_path / "lake"), "--landing", str(tmp_path / "landing")]
    result = runner.invoke(app, ["sources", "extract", "snowflake.order", "--date", "2026-11-01", *where])
    assert result.exit_code == 2 and "expected a landing entity name" in result.output
    result = runner.invoke(app, ["sources", "extract", "snowflake.orders", "--date", "2026-11-31", *where])
    assert result.exit_code == 2 and "expected --date as YYYY-MM-DD" in result.output
    result = runner.invoke(app, ["sources", "extract", "snowflake.orders", "--date", "2026-11-01", *where])
    assert result.exit_code == 2
    # the message names the settings table as it is written, brackets and all
    assert "[sources.snowflake]" in " ".join(result.output.split()) and "sources.snowflake.account" in result.output
    assert not (tmp_path / "lake" / "_extracts").exists()  # nothing was written


@pytest.mark.slow
def test_the_command_ends_quickly_yet_delivers_its_output_exit_code_and_prefect_logs(prefect_harness, tmp_path):
    """The installed ``lakehouse`` ends its process without Python's teardown (flows/command_line.py exit_now).
    Nothing a normal exit delivers is lost: the exit code of a failed run, its output, and the run's state and
    task states and logs on the Prefect server; a closed pipe is no error. (The exit handlers still run:
    tests/test_imports.py reads what its own handler prints.)"""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL

    command = str(Path(sys.executable).with_name("lakehouse"))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO", "COLUMNS": "200"}

    def lakehouse(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([command, *args], check=False, capture_output=True, text=True, env=env, timeout=600, **kw)

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    assert lakehouse("generate", "--days", "1", "--scale", "0.02", "--out", str(landing)).returncode == 0
    events = min((landing / "kafka" / "order_events").rglob("*.jsonl"))
    with events.open("a") as f:  # a third of the batch unreadable: the bronze gate stops the run
        f.write('{"broken": \n' * 2_000)
    failed = lakehouse("run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing", str(landing))
    assert failed.returncode != 0
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["daily-2026-11-01"]))) if r.parameters.get("lake_root") == str(lake)]
        assert [r.state.type.value for r in runs] == ["FAILED"]  # (the session's server holds other tests' runs)
        for _ in range(60):  # the server stores the logs it received in batches
            logs = [e.message for e in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))]
            if any("Finished in state Failed" in m for m in logs):  # the run's last log line arrived
                break
            time.sleep(0.5)
        for _ in range(60):  # task runs are reported by events, which the server records as they come
            tasks = {t.name: t.state.type.value for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[runs[0].id])))
                if t.state is not None}
            if tasks.get("gate-bronze") == "FAILED":  # the last task of the run, sent by the events worker at exit
                break
            time.sleep(0.5)
    assert tasks.get("gate-bronze") == "FAILED" and tasks.get("bronze-kafka.order_events") == "COMPLETED", tasks
    assert any("Finished in state Failed" in m for m in logs), logs
    assert any("bronze gate failed" in m and "kafka.order_events" in m for m in logs), logs

    shown = lakehouse("show", "gold.nope", "--lake-root", str(lake))
    assert shown.returncode == 2 and "expected a table name like 'gold.fact_orders'" in shown.stderr
    listed = lakehouse("tables", "--lake-root", str(lake))
    assert listed.returncode == 0 and listed.stdout.rstrip().endswith("┘"), listed.stdout  # the whole table
    piped = subprocess.run(f"'{command}' tables --lake-root '{lake}' | head -1", check=False, shell=True,
                           capture_output=True, text=True, env=env, timeout=600)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr and "tables in" in piped.stdout


@pytest.mark.slow
def test_a_cli_run_sends_its_heartbeat_itself_once_a_frequency_and_none_when_heartbeats_are_off(prefect_harness,
                                                                                                tmp_path):
    """``lakehouse run`` turns Prefect's heartbeat thread off (the run's end waited up to a second for it) and the
    daily flow sends the same event itself (flows/daily.py prompt_heartbeats): one
    ``prefect.flow-run.heartbeat`` at the start of a run shorter than the interval (two if both sent it, none if
    neither), naming the run and its flow as Prefect's does; with heartbeats off in the settings, none. (The
    heartbeat is the flow's, not an engine's: one engine covers it.)"""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from lakehouse.flows.daily import daily_lakehouse, prompt_heartbeats

    api = PREFECT_API_URL.value()
    command = str(Path(sys.executable).with_name("lakehouse"))
    landing = tmp_path / "landing"
    assert subprocess.run([command, "generate", "--days", "1", "--scale", "0.02", "--out", str(landing)],
                          check=False, capture_output=True, timeout=600).returncode == 0

    def heartbeats_of_a_run(lake: Path, *, heartbeats_off: bool = False) -> list[dict]:
        if heartbeats_off:  # (an environment variable cannot say None): the CLI's call, in this process
            with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prompt_heartbeats():
                daily_lakehouse(run_date=date(2026, 11, 1), lake_root=str(lake), landing_root=str(landing))
        else:
            done = subprocess.run([command, "run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing",
                                   str(landing)], check=False, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "PREFECT_API_URL": api})
            assert done.returncode == 0, done.stderr[-2000:]
        with get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=["daily-2026-11-01"]))) if r.parameters.get("lake_root") == str(lake)]
        assert [r.state.type.value for r in runs] == ["COMPLETED"]
        run = runs[0]
        query = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                            "resource": {"id": [f"prefect.flow-run.{run.id}"]},
                            "occurred": {"since": run.created.isoformat()}}, "limit": 50}
        for _ in range(20):  # the server records events as they come; the run's Completed event comes last
            found = httpx.post(f"{api}/events/filter", json=query, timeout=30).json()["events"]
            completed = httpx.post(f"{api}/events/filter", timeout=30, json={**query, "filter": {
                **query["filter"], "event": {"name": ["prefect.flow-run.Completed"]}}}).json()["events"]
            if completed:
                return found
            time.sleep(0.5)
        raise AssertionError(f"no Completed event for flow run {run.id}")

    beats = heartbeats_of_a_run(tmp_path / "lake")
    assert len(beats) == 1, beats
    assert beats[0]["resource"]["prefect.resource.name"] == "daily-2026-11-01"
    assert beats[0]["payload"] == {"interval_seconds": 180}  # the flow's own (Prefect's has no payload)
    assert {(r["prefect.resource.role"], r.get("prefect.resource.name")) for r in beats[0]["related"]} == {
        ("flow", "daily-lakehouse")}
    assert heartbeats_of_a_run(tmp_path / "lake-off", heartbeats_off=True) == []
