"""Servers the tests and benchmarks start on loopback: a free port, waiting for a server to listen, stopping
it by its process id, and a throw-away PostgreSQL (Redshift's wire protocol).

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
                                stdout=out, stderr=subprocess.STDOUT, **run_as)
    wait_for_port(proc, port, log, "PostgreSQL", timeout)
    return proc, {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD, "database": "postgres",
                  "base": base}


def stop_postgres(proc: subprocess.Popen, info: dict) -> None:
    stop(proc)
    shutil.rmtree(info["base"], ignore_errors=True)
