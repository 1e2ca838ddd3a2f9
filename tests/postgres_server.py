"""A throw-away PostgreSQL server on loopback (Redshift's wire protocol), for the tests and the extract benchmark.

``start()`` makes a fresh cluster in a temporary folder and starts ``postgres`` in the background. PostgreSQL
refuses to run as root: when the caller is root, the server runs as ``nobody``. ``stop()`` stops it by its
process id and removes the folder.
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


def _binaries() -> Path:
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        msg = "PostgreSQL is not installed: run 'make system-deps' (Debian's postgresql)"
        raise FileNotFoundError(msg)
    return versions[-1].parent


def start(timeout: float = 60) -> tuple[subprocess.Popen, dict]:
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("ab") as out:
        proc = subprocess.Popen([str(binaries / "postgres"), "-D", str(base / "data"), "-p", str(port), "-k",
                                 str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                                stdout=out, stderr=subprocess.STDOUT, **run_as)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                msg = f"PostgreSQL did not start on port {port}: {log.read_text()[-2000:]}"
                raise RuntimeError(msg) from None
            time.sleep(0.1)
    return proc, {"host": "127.0.0.1", "port": port, "user": USER, "password": PASSWORD, "database": "postgres",
                  "base": base}


def stop(proc: subprocess.Popen, info: dict) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(info["base"], ignore_errors=True)
