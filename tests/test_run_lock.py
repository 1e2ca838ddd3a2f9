"""The lake's run lock (backends/run_lock.py): exclusive, waits, names its holder, takes over only from the dead;
on a local lake and on S3 (moto's server on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from backends import Lake
from backends.run_lock import LakeLockedError, RunLock


def test_a_second_holder_waits_then_fails_naming_the_first(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    with lock.hold("run-a", "daily-lakehouse 2026-11-01", wait_seconds=0) as held:
        assert held["run_id"] == "run-a" and lock.holder()["pid"] == os.getpid()
        waited = []
        started = time.monotonic()
        with pytest.raises(LakeLockedError) as exc, lock.hold("run-b", "daily-lakehouse 2026-11-01", wait_seconds=1,
                                                               on_wait=waited.append):
            pass
        assert time.monotonic() - started >= 1
        assert [w["run_id"] for w in waited] == ["run-a"], "the waiter was told who holds the lock, once"
        assert "run run-a (daily-lakehouse 2026-11-01" in str(exc.value) and "runs.json" in str(exc.value)
        assert lock.holder()["run_id"] == "run-a", "a failed waiter leaves the holder's lock alone"
    assert lock.holder() is None


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    with pytest.raises(RuntimeError), lock.hold("run-a", "x", wait_seconds=0):
        raise RuntimeError("the run failed")
    assert lock.holder() is None


def test_a_waiter_gets_the_lock_as_soon_as_the_holder_is_done(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    order = []
    holding = threading.Event()

    def first():
        with lock.hold("run-a", "x", wait_seconds=0):
            order.append("a in")
            holding.set()
            time.sleep(1.0)
            order.append("a out")

    t = threading.Thread(target=first)
    t.start()
    assert holding.wait(timeout=30), "the first holder never got the lock"
    with lock.hold("run-b", "x", wait_seconds=10):
        order.append("b in")
    t.join()
    assert order == ["a in", "a out", "b in"]


def test_a_dead_holder_on_this_host_or_an_earlier_attempt_of_the_same_run_is_taken_over(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lock = RunLock(lake)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / "lake" / "_locks").mkdir(parents=True)
    path = tmp_path / "lake" / "_locks" / "runs.json"
    path.write_text(json.dumps({"token": "t0", "run_id": "run-gone", "what": "x", "host": socket.gethostname(),
                                "pid": int(dead.stdout), "acquired_at": "2026-11-01T06:00:00+00:00"}))
    with lock.hold("run-b", "x", wait_seconds=0) as held:
        assert held["run_id"] == "run-b"
    # A lock of a live process of another run is not taken; one of the same run (a retried attempt) is.
    path.write_text(json.dumps({"token": "t1", "run_id": "run-c", "what": "x", "host": socket.gethostname(),
                                "pid": os.getpid(), "acquired_at": "2026-11-01T06:00:00+00:00"}))
    with pytest.raises(LakeLockedError), lock.hold("run-d", "x", wait_seconds=0):
        pass
    with lock.hold("run-c", "x", wait_seconds=0) as held:
        assert held["token"] != "t1"
    assert lock.holder() is None


def test_on_s3_the_lock_is_a_conditional_put(aws):
    import boto3

    boto3.client("s3").create_bucket(Bucket="lock-lake")
    lock = RunLock(Lake("s3://lock-lake/prod/lake"))
    with lock.hold("run-a", "x", wait_seconds=0):
        body = boto3.client("s3").get_object(Bucket="lock-lake", Key="prod/lake/_locks/runs.json")["Body"].read()
        assert json.loads(body)["run_id"] == "run-a"
        with pytest.raises(LakeLockedError, match="run run-a"), lock.hold("run-b", "x", wait_seconds=0.5):
            pass
    assert lock.holder() is None
    with lock.hold("run-b", "x", wait_seconds=0) as held:
        assert held["run_id"] == "run-b"
