"""``lakehouse server``: the local Prefect server the CLI's runs report to, started once and reused.

Every run the CLI starts is a Prefect flow run (UI, artifacts, retries). With no API configured, Prefect would
start an ephemeral server inside each process (10-20 s, and a failed run when it misses its start-up timeout on
a busy laptop). The CLI instead uses, in this order:

1. the API the user configured (``PREFECT_API_URL`` in the environment or the active Prefect profile), after
   checking that it answers;
2. the local server it started before for this ``PREFECT_HOME`` (``lakehouse-server.json`` there names its
   process and address), while that process answers;
3. a new local server on 127.0.0.1 (port 4200, or a free one when 4200 is taken), started in the background with
   its state in ``PREFECT_HOME`` and left running for the next command; ``lakehouse server stop`` stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from lakehouse.flows.command_line import console, err

server_app = typer.Typer(help="The local Prefect server the runs report to: started by the first run, reused after.",
                         no_args_is_help=True)

DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0  # a cold start on a loaded 2-core laptop took 42-81 s


class PrefectServerError(RuntimeError):
    """The Prefect API a run would report to is not there and could not be started."""


@dataclass(frozen=True)
class LocalServer:
    pid: int
    url: str  # the API URL, http://127.0.0.1:<port>/api
    started_at: str
    log: str

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _state_file() -> Path:
    return prefect_home() / "lakehouse-server.json"


def answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether something answers HTTP at ``api_url``'s health endpoint (any status: an API that wants a key
    still answers)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running() -> LocalServer | None:
    """The local server started for this ``PREFECT_HOME``, if its process is alive and answers."""
    try:
        server = LocalServer(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(server.pid) and answers(server.url):
        return server
    return None


def _port() -> int:
    for port in (DEFAULT_PORT, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise PrefectServerError("no free port on 127.0.0.1 for the local Prefect server")


def start(timeout: float = START_TIMEOUT_S, waiting: Callable[[float], None] = lambda _: None) -> LocalServer:
    """The running local server, or a new one started in the background (``waiting(seconds)`` is told while it
    comes up). A second process starting one at the same time waits for the first and reuses its server."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / "lakehouse-server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = running()
        if server is not None:
            return server
        port = _port()
        log = home / "server.log"
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        with log.open("ab") as out:
            proc = subprocess.Popen(  # its own session: it outlives this command and the terminal's Ctrl-C
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        server = LocalServer(pid=proc.pid, url=f"http://127.0.0.1:{port}/api",
                             started_at=datetime.now(UTC).isoformat(timespec="seconds"), log=str(log))
        began = time.monotonic()
        while not answers(server.url, timeout=1.0):
            if proc.poll() is not None:
                raise PrefectServerError(
                    f"the local Prefect server exited while starting (exit code {proc.returncode}); its log "
                    f"{log} ends with:\n{_tail(log)}")
            if time.monotonic() - began > timeout:
                _terminate(proc.pid)
                raise PrefectServerError(
                    f"the local Prefect server did not answer within {timeout:.0f} s (log: {log}); start one with "
                    "'prefect server start' and set PREFECT_API_URL=http://127.0.0.1:4200/api, then run again")
            waiting(time.monotonic() - began)
            time.sleep(0.5)
        _state_file().write_text(json.dumps(asdict(server)))
        return server


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(pid: int, grace: float = 15.0) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if pid <= 1:
        raise PrefectServerError(f"expected the Prefect server's process id (> 1) in {_state_file()}, got {pid}")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
            if not _alive(pid):
                return
            time.sleep(0.1)


def stop() -> LocalServer | None:
    """Stop the local server of this ``PREFECT_HOME``; the one stopped, or None when none was running."""
    try:
        server = LocalServer(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(server.pid):
        _terminate(server.pid)
    _state_file().unlink(missing_ok=True)
    return server


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """While open, Prefect reports to the configured API, or to the local server (started when needed); the
    API URL. Raises PrefectServerError, naming what to do, when neither is there."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        if not answers(configured, timeout=5.0):
            raise PrefectServerError(
                f"the Prefect API at {configured} (PREFECT_API_URL) does not answer: start that server, or unset "
                "PREFECT_API_URL to let lakehouse start a local one")
        yield configured
        return
    server = running()
    if server is None:
        with console.status("starting the local Prefect server (once: later runs reuse it; "
                            "'lakehouse server stop' stops it)") as status:
            server = start(waiting=lambda s: status.update(f"starting the local Prefect server: {s:.0f} s (once: "
                                                           "later runs reuse it)"))
        console.print(f"Prefect server started: UI at [bold]{server.ui}[/] (pid {server.pid}; "
                      "'lakehouse server stop' stops it)")
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield server.url


@server_app.command("start")
def start_command(
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for the server to answer")] = START_TIMEOUT_S,
) -> None:
    """Start the local Prefect server in the background (or report the one running)."""
    was = running()
    try:
        with console.status("starting the local Prefect server"):
            server = was or start(timeout)
    except PrefectServerError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    console.print(f"Prefect server {'already ' if was else ''}running: UI at [bold]{server.ui}[/], API "
                  f"{server.url} (pid {server.pid}, PREFECT_HOME {prefect_home()})")


@server_app.command("stop")
def stop_command() -> None:
    """Stop the local Prefect server the CLI started."""
    server = stop()
    console.print(f"stopped the Prefect server at {server.ui} (pid {server.pid})" if server
                  else f"no local Prefect server was running for PREFECT_HOME {prefect_home()}")


@server_app.command("status")
def status_command() -> None:
    """Which Prefect API the runs report to."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        state = "answers" if answers(configured) else "does not answer"
        console.print(f"runs report to PREFECT_API_URL={configured} ({state})")
        return
    server = running()
    if server is None:
        console.print(f"no local Prefect server running for PREFECT_HOME {prefect_home()}: the next run starts one")
        return
    console.print(f"local Prefect server running: UI at [bold]{server.ui}[/], API {server.url} (pid {server.pid}, "
                  f"since {server.started_at}, log {server.log})")
