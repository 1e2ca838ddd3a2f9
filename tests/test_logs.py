"""The lake's own logs are declared once (contracts/logs.py) and served by one reader/appender (backends/logs.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import lake_log
from lakehouse.contracts.logs import LINEAGE, LOCKS, LOGS, RESULTS, log

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("backends", "contracts", "deployments", "flows", "tasks")


def test_no_module_but_the_declaration_names_a_log_path():
    prefixes = {spec.path.split("/")[0] for spec in LOGS.values()} | {LOCKS, RESULTS, LINEAGE}
    pattern = re.compile(r"[\"'](" + "|".join(map(re.escape, sorted(prefixes))) + r")\b")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for pkg in PRODUCT for p in sorted((ROOT / pkg).rglob("*.py"))
                 if p.name != "logs.py" or p.parent.name != "contracts"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_a_log_is_appended_with_its_declared_schema_and_read_in_its_declared_order(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    refused = lake_log(lake, "refused", source="crm", entity="accounts")
    assert refused.path == "_refused/crm/accounts"
    assert refused.rows() == [] and refused.table() is None
    later, earlier = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    refused.append([{"source_file": "b.csv", "problem": "file.extension", "reason": "r", "run_id": "2",
                     "run_date": date(2026, 11, 2), "refused_at": later}])
    refused.append([{"source_file": "a.csv", "problem": "file.unreadable", "reason": "r", "run_id": "1",
                     "run_date": date(2026, 11, 1), "refused_at": earlier}])
    assert [r["source_file"] for r in refused.rows()] == ["a.csv", "b.csv"]
    read = refused.table().schema  # strings come back as large_string (Polars reads the log)
    assert read.names == log("refused").schema.names
    assert read.field("refused_at").type == log("refused").schema.field("refused_at").type
    # Each append is one commit of the Delta table under the root.
    assert (tmp_path / "lake" / "_refused" / "crm" / "accounts" / "_delta_log" / "00000000000000000001.json").exists()


def test_a_row_of_the_wrong_shape_is_refused_before_anything_is_written(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    runs = lake_log(lake, "ledger")
    with pytest.raises((TypeError, ValueError)):
        runs.append([{"run_date": "not a date", "run_id": "1"}])
    assert runs.table() is None


def test_unknown_logs_and_missing_path_fields_name_what_was_expected(tmp_path):
    lake = Lake(str(tmp_path))
    with pytest.raises(KeyError, match="known logs: builds, checkpoints"):
        lake_log(lake, "refusals")
    with pytest.raises(ValueError, match=r"expected refused log fields \['source', 'entity'\]"):
        lake_log(lake, "refused", source="crm")


def test_every_log_declares_keys_and_order_that_are_columns_of_its_schema():
    for spec in LOGS.values():
        assert spec.description
        assert set(spec.keys) <= set(spec.schema.names), spec.name
        assert set(spec.order_by) <= set(spec.schema.names), spec.name


def test_one_run_log_holds_the_task_runs_and_the_runs_that_finished_a_date(tmp_path):
    from lakehouse.backends.run_log import RunLog
    from lakehouse.tasks.ledger import read_ledger

    lake = Lake(str(tmp_path / "lake"))
    day, t0 = date(2026, 11, 2), datetime(2026, 11, 3, 6, 0, tzinfo=UTC)
    lake_log(lake, "ledger").append([{
        "run_id": "r1", "flow": "daily-lakehouse", "task": "silver-orders", "task_run_id": "t1",
        "table": "silver.orders", "run_date": day, "versions_read": "{}", "version_written": 0, "rows_out": 5,
        "status": "completed", "started_at": t0, "duration_s": 1.5, "engine": "polars", "level": "task"}])
    RunLog(lake).record(run_date=day, run_id="r1", flow="daily-lakehouse", backend="polars", release_id="rel-1",
                        locked_at=t0, finished_at=datetime(2026, 11, 3, 6, 0, 9, tzinfo=UTC), forced=False,
                        missing=["fx.rates"])
    assert [r["task"] for r in read_ledger(lake)] == ["silver-orders"], "the ledger's readers see task rows only"
    [run] = RunLog(lake).history()
    assert (run["run_date"], run["release_id"], run["missing"], run["duration_s"]) == (day, "rel-1", ["fx.rates"], 9.0)
    assert run["finished_at"] == datetime(2026, 11, 3, 6, 0, 9, tzinfo=UTC)
    assert RunLog(lake).done_dates() == {day} and RunLog(lake).went_without() == {day: ["fx.rates"]}
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == ["_ledger"], "one log, one Delta table"


def test_both_log_readers_return_the_same_rows_for_every_column_type(tmp_path):
    """A run reads logs with Polars, a metadata command with delta-rs's own engine (no Polars or pyarrow import:
    tests/test_imports.py); both give the same Python values: text, integers, floats, booleans, dates, UTC
    timestamps, lists and nulls, across several commits."""
    from lakehouse.backends.lake import log_rows_delta_rs, log_rows_polars

    lake = Lake(str(tmp_path / "lake"))
    ledger = lake_log(lake, "ledger")
    started = datetime(2026, 11, 1, 6, 30, 15, 123456, tzinfo=UTC)
    for n in range(3):
        ledger.append([{"run_id": f"r{n}", "flow": "daily", "task": "silver", "task_run_id": f"t{n}",
                        "table": None if n == 1 else "silver.orders", "run_date": date(2026, 11, 1 + n),
                        "versions_read": "{}", "version_written": n, "rows_in": 10 * n, "status": "completed",
                        "started_at": started + timedelta(hours=2 - n), "duration_s": 1.5 + n, "engine": "polars", "level": "run",
                        "forced": n == 2, "missing": ["fx.rates", "crm.accounts"] if n else None}])
    dt = lake.log_table(ledger.path)
    by_polars, by_delta_rs = log_rows_polars(dt), log_rows_delta_rs(dt)
    key = lambda r: r["run_id"]
    assert sorted(by_delta_rs, key=key) == sorted(by_polars, key=key)
    second = next(r for r in by_delta_rs if r["run_id"] == "r1")
    assert second["table"] is None and second["missing"] == ["fx.rates", "crm.accounts"]
    assert second["run_date"] == date(2026, 11, 2) and second["started_at"] == started + timedelta(hours=1)
    assert second["duration_s"] == 2.5 and second["forced"] is False and second["rows_out"] is None
    assert [r["run_id"] for r in ledger.rows()] == ["r2", "r1", "r0"]  # by started_at
