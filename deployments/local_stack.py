"""A local Prefect stack for the deployments in ``deployments/prefect.yaml``: a Prefect server on loopback, the
work pools, every deployment registered, and a process worker.

    python -m lakehouse.deployments.local_stack up [--port 4200]    # make deploy-local
    python -m lakehouse.deployments.local_stack down                # make deploy-local-stop

State lives in ``$PREFECT_HOME`` (the Makefile sets ``.prefect/``): the server's database, the logs of the
server and worker, and ``local-stack.json`` with their process ids, which ``down`` stops (each started in its
own process group, so the server's children stop too). Then, with ``PREFECT_API_URL`` as ``up`` prints:

    prefect deployment run 'daily-lakehouse/local' -p run_date=2026-11-01
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
POOLS = ("lakehouse-local", "lakehouse-prod")  # the production pool is a process pool here too
WORKER_POOL = "lakehouse-local"


class StackError(RuntimeError):
    """A part of the local stack did not start."""


def _home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or ROOT / ".prefect").resolve()


def stack_env(home: Path, port: int) -> dict[str, str]:
    """The environment every part of the stack and every ``prefect`` command against it runs with."""
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "LAKEHOUSE_PROJECT_DIR": str(ROOT)}


def _prefect(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).with_name("prefect")), *args]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        msg = f"{' '.join(cmd[1:])} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        raise StackError(msg)
    return done


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("prefect")), *args], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _create_pools(api_url: str) -> None:
    """Create the process work pools that do not exist yet, with the process worker's default job template (what
    ``prefect work-pool create --type process`` does, without a command's start-up per pool)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for pool in POOLS:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))


def wait_healthy(port: int, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            msg = f"the Prefect server on port {port} did not become healthy; its log ({log}):\n{tail}"
            raise StackError(msg)
        time.sleep(0.5)


def up(port: int = 4200, home: Path | None = None) -> dict[str, Any]:
    """Start the server and worker, create the pools, register every deployment; the stack's description."""
    home = home or _home()
    home.mkdir(parents=True, exist_ok=True)
    if (home / "local-stack.json").exists():
        msg = f"a local stack is already recorded in {home / 'local-stack.json'}; run 'down' first"
        raise StackError(msg)
    env = stack_env(home, port)
    server_log, worker_log = home / "server.log", home / "worker.log"
    server = _start(["server", "start", "--host", "127.0.0.1", "--port", str(port)], env, server_log)
    state = {"port": port, "api_url": env["PREFECT_API_URL"], "home": str(home), "server_pid": server.pid,
             "worker_pid": None, "logs": [str(server_log), str(worker_log)]}
    _save(home, state)
    try:
        wait_healthy(port, server, server_log)
        _create_pools(env["PREFECT_API_URL"])
        # The worker starts while the deployments are registered (it polls its pool for runs).
        worker = _start(["worker", "start", "--pool", WORKER_POOL, "--name", "lakehouse-local-worker"], env,
                        worker_log)
        state["worker_pid"] = worker.pid
        _save(home, state)
        _prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE), env=env)
    except BaseException:
        down(home)
        raise
    return state


def down(home: Path | None = None) -> list[int]:
    """Stop what ``up`` started (worker first), by process group id; the ids stopped."""
    home = home or _home()
    record = home / "local-stack.json"
    if not record.exists():
        return []
    state = json.loads(record.read_text())
    stopped = []
    for key in ("worker_pid", "server_pid"):
        pid = state.get(key)
        if pid and _stop_group(pid):
            stopped.append(pid)
    record.unlink()
    return stopped


def _stop_group(pid: int, grace: float = 15) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def _save(home: Path, state: dict[str, Any]) -> None:
    (home / "local-stack.json").write_text(json.dumps(state, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lakehouse.deployments.local_stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--port", type=int, default=4200, help="Prefect server port on 127.0.0.1 (up)")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            state = up(args.port)
            print(f"Prefect server: http://127.0.0.1:{state['port']} (UI and API), worker on pool {WORKER_POOL}")
            print(f"deployments registered from {PREFECT_FILE.relative_to(ROOT)}; logs in {state['home']}")
            print(f"export PREFECT_API_URL={state['api_url']}")
            print("prefect deployment run 'daily-lakehouse/local' -p run_date=2026-11-01 --watch")
            print("stop it all with: make deploy-local-stop")
        else:
            stopped = down()
            print(f"stopped process groups {stopped}" if stopped else "no local stack was running")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
