"""What each command imports: read-only commands load no Prefect, pandera or pandas, and the laptop install (no
extras) runs a day without pyspark, pandas or pandera, so a command pays only for what it uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("prefect", "pandera", "pandas", "pyspark")

# Runs the CLI as `lakehouse ...` does, then prints which of HEAVY the process imported.
_RUN_CLI = """
import atexit, json, os, runpy, sys
heavy = json.loads(os.environ["HEAVY_MODULES"])
atexit.register(lambda: print("LOADED", json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))))
sys.argv = ["lakehouse", *sys.argv[1:]]
runpy.run_module("lakehouse.flows.cli", run_name="__main__")
"""


def _loaded(python: str, args: list[str], env: dict[str, str] | None = None,
            heavy: tuple[str, ...] = HEAVY) -> tuple[set[str], str, str]:
    done = subprocess.run([python, "-c", _RUN_CLI, *args], check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {}), "HEAVY_MODULES": json.dumps(heavy)}, cwd=ROOT)
    assert done.returncode == 0, f"lakehouse {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("LOADED ")][-1]
    return set(json.loads(line.removeprefix("LOADED "))), done.stdout, done.stderr


@pytest.mark.slow
def test_read_only_commands_import_no_prefect_pandera_or_pandas(pristine_lake):
    """With every extra installed (this venv holds pandas and pyspark), reading the lake loads none of them."""
    lake = ["--lake-root", str(pristine_lake["root"])]
    for args in (["tables"], ["status"], ["releases"], ["show", "gold.customer_360", "--limit", "2"],
                 ["quarantine", "list"]):
        loaded, out, _ = _loaded(sys.executable, [*args, *lake])
        assert loaded == set(), f"lakehouse {args[0]} imported {sorted(loaded)}"
        assert out.strip(), f"lakehouse {args[0]} printed nothing"


@pytest.mark.slow
def test_lake_metadata_commands_import_no_dataframe_library(pristine_lake):
    """tables, status and releases read the Delta logs only (delta-rs and its own Arrow): no Polars, pyarrow,
    numpy or Narwhals either, and what they print is the lake's state."""
    from lakehouse.backends.lake import Lake
    from lakehouse.backends.releases import Releases
    from lakehouse.contracts.catalog import TABLES

    root = pristine_lake["root"]
    release = Releases(Lake(str(root))).current()
    assert release is not None
    heavy = (*HEAVY, "polars", "pyarrow", "numpy", "narwhals")
    printed = {}
    for command in ("tables", "status", "releases"):
        loaded, printed[command], _ = _loaded(sys.executable, [command, "--lake-root", str(root)],
                                              {"COLUMNS": "250"}, heavy=heavy)
        assert loaded == set(), f"lakehouse {command} imported {sorted(loaded)}"
    assert all(name in printed["tables"] for name in TABLES)
    fact_rows = Lake(str(root)).row_count(TABLES["gold.fact_orders"], release.versions["gold.fact_orders"])
    assert f"{fact_rows:,}" in printed["tables"]
    assert release.release_id in printed["releases"] and release.run_id in printed["releases"]
    assert str(release.run_date) in printed["status"] and "gold.fact_orders" in printed["status"]


@pytest.mark.slow
def test_the_laptop_install_runs_a_day_without_pyspark_pandas_or_pandera(prefect_harness, tmp_path):
    """A venv with the core dependencies only (the distribution without extras) runs the daily flow for a
    generated day and never imports pyspark or pandas (neither is installed there, so an import of either on this
    path would fail the run) nor pandera (installed; its report is built only for a failed check)."""
    uv = Path(sys.executable).with_name("uv")
    venv = tmp_path / "core"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    # Offline: the wheels come from the cache `make setup` filled; the test reaches no index.
    install = subprocess.run([str(uv), "pip", "install", "-q", "--offline", "--python", str(venv / "bin" / "python"),
                              "-c", str(ROOT / "requirements.lock"), "-e", str(ROOT)],
                             check=False, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"the core install needs uv's cache filled by `make setup`:\n{install.stderr}"
    python = str(venv / "bin" / "python")
    for missing in ("pandas", "pyspark"):
        probe = subprocess.run([python, "-c", f"import {missing}"], check=False, capture_output=True, timeout=60)
        assert probe.returncode != 0, f"the core install holds {missing}"
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": PREFECT_API_URL.value()}
    _loaded(python, ["generate", "--days", "1", "--scale", "0.02", "--out", str(landing)], env)
    loaded, out, _ = _loaded(python, ["run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing",
                                   str(landing)], env)
    assert loaded == {"prefect"}, f"the laptop run imported {sorted(loaded - {'prefect'})}"
    assert "gold-000001" in out, out  # the day ran through to its release
    assert (lake / "gold" / "fact_orders" / "_delta_log").is_dir()
    shutil.rmtree(venv)


@pytest.mark.slow
def test_a_day_on_polars_imports_no_pandas_where_pandas_is_installed(prefect_harness, tmp_path):
    """pyarrow imports pandas (half a second) the first time it converts a Python value, whenever pandas is
    installed, as it is with the Spark extra (this venv) and on most machines. A Polars day, with rows that are
    quarantined and a file that is refused, converts none: the run imports Prefect and nothing else heavy."""
    from prefect.settings import PREFECT_API_URL

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": PREFECT_API_URL.value()}
    _loaded(sys.executable, ["generate", "--days", "1", "--scale", "0.02", "--out", str(landing)], env)
    events = min((landing / "kafka" / "order_events").rglob("*.jsonl"))
    with events.open("a") as f:  # a line that is quarantined, one the bulk decoder leaves to the line reader
        f.write('{"not": "closed"\n{"event_id": "x", "note": "[a bracket]"}\n')
    (events.parent / "refused.jsonl").write_bytes(b"\x1f\x8b\x08\x00truncated")  # a broken gzip stream: refused
    loaded, out, err = _loaded(sys.executable, ["run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing",
                                           str(landing)], env)
    assert loaded == {"prefect"}, f"the Polars run imported {sorted(loaded - {'prefect'})}"
    assert "gold-000001" in out, out
    assert "refused.jsonl" in err, err  # the refusal is reported
    quarantined, listed, _ = _loaded(sys.executable, ["quarantine", "list", "--lake-root", str(lake)], env)
    assert quarantined == set()
    assert "parse.malformed_json" in listed, listed  # the damaged line was quarantined, not lost
