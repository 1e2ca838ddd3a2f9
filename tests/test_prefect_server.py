"""The CLI's Prefect server: the first run starts a local server in the background (state in PREFECT_HOME), later
runs reuse it and stay first-class flow runs there, ``lakehouse server stop`` stops it; an API the user
configured that does not answer is one clear error before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lakehouse.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lakehouse.flows.cli", *args], check=False, capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(home), "COLUMNS": "200", **extra}


def _flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=json.dumps({"limit": 50}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_runs_start_the_local_server_once_reuse_it_and_server_stop_stops_it(tmp_path):
    home, landing, lake = tmp_path / "prefect", tmp_path / "landing", tmp_path / "lake"
    env = _env(home)
    generated = _cli(["generate", "--days", "2", "--scale", "0.02", "--out", str(landing)], env)
    assert generated.returncode == 0, generated.stderr
    state = home / "lakehouse-server.json"
    pid = None
    try:
        first = _cli(["run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing", str(landing)], env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "Prefect server started" in first.stdout
        server = json.loads(state.read_text())
        pid, api = server["pid"], server["url"]
        os.kill(pid, 0)  # alive after the command that started it ended

        second = _cli(["run", "--date", "2026-11-02", "--lake-root", str(lake), "--landing", str(landing)], env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "Prefect server started" not in second.stdout, "the second run started another server"
        assert json.loads(state.read_text())["pid"] == pid
        status = _cli(["server", "status"], env)
        assert f"pid {pid}" in status.stdout and api in status.stdout

        runs = _flow_runs(api)  # both days are flow runs of the server, with their stages as subflow runs
        names = {r["name"]: r["state_type"] for r in runs}
        assert names["daily-2026-11-01"] == names["daily-2026-11-02"] == "COMPLETED"
        assert {"ingest-2026-11-02", "refine-2026-11-02", "publish-2026-11-02"} <= set(names)

        stopped = _cli(["server", "stop"], env)
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not state.exists()
        assert "no local Prefect server running" in _cli(["server", "status"], env).stdout
    finally:
        _cli(["server", "stop"], env)


@pytest.mark.slow
def test_a_configured_api_that_does_not_answer_is_one_clear_error_before_any_write(tmp_path):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = _env(tmp_path / "prefect", PREFECT_API_URL=api)
    assert _cli(["generate", "--days", "1", "--scale", "0.01", "--out", str(landing)], env).returncode == 0
    result = _cli(["run", "--date", "2026-11-01", "--lake-root", str(lake), "--landing", str(landing)], env)
    assert result.returncode == 1
    assert f"the Prefect API at {api} (PREFECT_API_URL) does not answer" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "prefect" / "lakehouse-server.json").exists(), "a configured API is never replaced"
    assert not any((lake / "bronze").glob("**/_delta_log")) if lake.exists() else True
    status = _cli(["server", "status"], env)
    assert f"PREFECT_API_URL={api} (does not answer)" in status.stdout
