"""Servers a test or a benchmark starts on loopback: a free port, starting a server and waiting for it to
listen, stopping it by its process id; Sail's Spark Connect server, fakesnow's Snowflake server and a
throw-away PostgreSQL (Redshift's wire protocol).

``start_postgres()`` makes a fresh cluster in a temporary folder and starts ``postgres`` in the background.
PostgreSQL refuses to run as root: when the caller is root, the server runs as ``nobody``. ``stop_postgres()``
stops it and removes the folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "extract-pass"  # a throw-away local test server
USER = "lakehouse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, log: Path, what: str, timeout: float = 60) -> None:
    """Return once something listens on ``port``; kill ``proc`` and raise (with its log's end) if it exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                msg = f"{what} did not start on port {port}: {log.read_text()[-2000:]}"
                raise RuntimeError(msg) from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def start(args: list[str], what: str, port: int, log: Path, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.Popen:
    """Start ``args`` in the background (output to ``log``) and return once it listens on ``port``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    wait_for_port(proc, port, log, what, timeout)
    return proc


def start_sail(workdir: Path, timeout: float = 60, *, mode: str = "local") -> tuple[subprocess.Popen, str]:
    """Sail's Spark Connect server (the ``sail`` command of the spark extra) and its ``sc://`` address.

    ``mode="local-cluster"`` runs Sail's driver and its workers as separate actors that talk over RPC on
    loopback (``SAIL_MODE``), so plans run distributed: stages split into tasks on workers, data shuffled
    between them; its log then also holds each task status a worker reports to the driver (unless ``RUST_LOG``
    is set). The server's log is ``workdir/sail.log``."""
    if mode not in ("local", "local-cluster"):
        msg = f"expected mode 'local' or 'local-cluster', got {mode!r}"
        raise ValueError(msg)
    port = free_port()
    sail = Path(sys.executable).parent / "sail"
    env = {**os.environ, "SAIL_MODE": mode}
    if mode == "local-cluster":
        env.setdefault("RUST_LOG", "info,sail_execution::driver::server=debug")
    proc = start([str(sail), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)], "Sail server", port,
                 workdir / "sail.log", env=env, timeout=timeout)
    return proc, f"sc://127.0.0.1:{port}"


def start_fakesnow(workdir: Path, timeout: float = 60) -> tuple[subprocess.Popen, dict]:
    """fakesnow's Snowflake server (:mod:`lakehouse.testing.fakesnow_server`) and its host, port and log."""
    port = free_port()
    log = workdir / "fakesnow.log"
    proc = start([sys.executable, "-m", "lakehouse.testing.fakesnow_server", "--port", str(port)],
                 "fakesnow server", port, log, timeout=timeout)
    return proc, {"host": "127.0.0.1", "port": port, "log": log}


def _binaries() -> Path:
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        msg = "PostgreSQL is not installed: run 'make system-deps' (Debian's postgresql)"
        raise FileNotFoundError(msg)
    return versions[-1].parent


def start_postgres(timeout: float = 60) -> tuple[subprocess.Popen, dict]:
    """A running server and its connection settings (host, port, user, password, database, base folder)."""
    binaries = _binaries()
    base = Path(tempfile.mkdtemp(prefix="lakehouse-pg-"))
    run_as: dict[str, int] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    pwfile, log = base / "pw", base / "server.log"
    pwfile.write_text(f"{PASSWORD}\n")
    log.touch()
    for path in (base, pwfile, log):
        if run_as:
            os.chown(path, run_as["user"], run_as["group"])
    subprocess.run([str(binaries / "initdb"), "-D", str(base / "data"), "-U", USER, "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8"], check=True, capture_output=True, **run_as)
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([str(binaries / "postgres"), "-D", str(base / "data"), "-p", str(port), "-k",
                                 str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                stdout=out, stderr=subprocess.STDOUT, **run_as)  # runs as nobody under root
    wait_for_port(proc, port, log, "PostgreSQL", timeout)
    return proc, {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD, "database": "postgres",
                  "base": base}


def stop_postgres(proc: subprocess.Popen, info: dict) -> None:
    stop(proc)
    shutil.rmtree(info["base"], ignore_errors=True)
