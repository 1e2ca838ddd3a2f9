"""The lake's run lock (backends/run_lock.py): a lease that its holder renews; exclusive, waits naming the holder
and its expiry, taken over once the lease runs out (whatever host, PID or container holds it), atomically, on a
local lake and on S3 (moto's server on loopback); `lakehouse status` shows it and `lakehouse unlock` clears it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse.backends import Lake
from lakehouse.backends.run_lock import LakeLockedError, LakeLockLostError, RunLock

ROOT = Path(__file__).resolve().parents[1]
SLACK = 1.5  # a poll (0.5 s) and the rest for a loaded machine: the bounds below are the lease plus one renewal


def _write_lock(lake_root: Path, **body) -> Path:
    path = lake_root / "_locks" / "runs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    full = {"token": "t0", "run_id": "run-gone", "what": "daily-lakehouse 2026-11-01", "host": socket.gethostname(),
            "pid": os.getpid(), "acquired_at": (now - timedelta(minutes=5)).isoformat(),
            "renewed_at": (now - timedelta(minutes=2)).isoformat(),
            "expires_at": (now - timedelta(minutes=1)).isoformat(), "lease_seconds": 60} | body
    path.write_text(json.dumps(full))
    return path


def test_a_second_holder_waits_then_fails_naming_the_first_and_its_lease(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    with lock.hold("run-a", "daily-lakehouse 2026-11-01", wait_seconds=0) as held:
        assert held["run_id"] == "run-a" and lock.holder()["pid"] == os.getpid()
        waited = []
        started = time.monotonic()
        with pytest.raises(LakeLockedError) as exc, lock.hold("run-b", "daily-lakehouse 2026-11-01", wait_seconds=1,
                                                               on_wait=waited.append):
            pass
        assert time.monotonic() - started >= 1
        assert len(waited) == 1 and "run run-a (daily-lakehouse 2026-11-01" in waited[0]
        assert f"lease expires {lock.holder()['expires_at'][:19]}" in waited[0], "the wait names the lease's expiry"
        assert "run run-a (daily-lakehouse 2026-11-01" in str(exc.value) and "runs.json" in str(exc.value)
        assert "lakehouse unlock" in str(exc.value)
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


def test_the_holder_renews_its_lease_so_a_long_run_keeps_the_lock(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")), lease_seconds=1.5, heartbeat_seconds=0.1)
    with lock.hold("run-a", "x", wait_seconds=0):
        first = lock.holder()["expires_at"]
        time.sleep(3.2)  # more than two leases: without renewals the lock would be stale by now
        assert lock.holder()["expires_at"] > first
        assert not lock.is_stale(lock.read())
        with pytest.raises(LakeLockedError, match="run run-a"), lock.hold("run-b", "x", wait_seconds=0):
            pass
    assert lock.holder() is None


@pytest.mark.parametrize("case", ["same pid (a restarted container)", "another host", "a dead process"])
def test_a_lease_that_ran_out_is_taken_over_whoever_held_it(tmp_path, case):
    """The container case: the dead holder's PID is the new run's own PID, on the same host name; a lease not
    renewed is stale whatever its PID or host, and a live one is never taken, whatever its PID or host."""
    body = {"same pid (a restarted container)": {"pid": os.getpid(), "host": socket.gethostname()},
            "another host": {"host": "pod-7f9c-gone", "pid": 1},
            "a dead process": {"pid": 2**22 + 17}}[case]
    lock = RunLock(Lake(str(tmp_path / "lake")))
    live = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    _write_lock(tmp_path / "lake", **body, expires_at=live, renewed_at=datetime.now(UTC).isoformat())
    with pytest.raises(LakeLockedError, match="run run-gone"), lock.hold("run-b", "x", wait_seconds=0):
        pass
    assert lock.holder()["run_id"] == "run-gone", "a live lease is not taken, whatever its PID or host"
    _write_lock(tmp_path / "lake", **body)  # the same lock, its lease ran out a minute ago
    started = time.monotonic()
    with lock.hold("run-b", "x", wait_seconds=0) as held:
        assert held["run_id"] == "run-b" and lock.holder()["token"] != "t0"
    assert time.monotonic() - started < 5
    assert lock.holder() is None


def test_a_killed_holder_is_taken_over_within_the_lease_plus_one_renewal(tmp_path):
    """A real holder process, killed with SIGKILL while it holds the lock: the next run waits for its lease to run
    out (1 s here), no longer."""
    lake = tmp_path / "lake"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from lakehouse.backends import Lake; from lakehouse.backends.run_lock import RunLock;"
        "lock = RunLock(Lake(sys.argv[2]), lease_seconds=1.0, heartbeat_seconds=0.2);"
        "cm = lock.hold('run-killed', 'daily-lakehouse 2026-11-01', wait_seconds=0); cm.__enter__();"
        "print('held', flush=True); time.sleep(600)"), str(ROOT), str(lake)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.5)  # the heartbeat keeps the lease alive past its first expiry
        lock = RunLock(Lake(str(lake)), lease_seconds=1.0, heartbeat_seconds=0.2)
        assert not lock.is_stale(lock.read()), "a live holder's lease is renewed"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        killed_at = time.monotonic()
        waited = []
        with lock.hold("run-next", "x", wait_seconds=30, on_wait=waited.append) as held:
            took = time.monotonic() - killed_at
            assert held["run_id"] == "run-next"
        # The lease plus one renewal, and a poll and some slack for a busy machine.
        assert took <= 1.0 + 0.2 + SLACK, f"waited {took:.1f} s, more than the lease plus one renewal"
        assert waited and "run run-killed" in waited[0]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("content", [b"", b'{"token": "t0", "run_id": "run-a", "wh'], ids=["empty", "cut short"])
def test_an_unreadable_lock_is_stale_once_older_than_the_lease(tmp_path, content):
    lock = RunLock(Lake(str(tmp_path / "lake")), lease_seconds=1.0, heartbeat_seconds=0.2)
    path = tmp_path / "lake" / "_locks" / "runs.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert lock.read().body is None and lock.holder() is None
    assert not lock.is_stale(lock.read()), "a fresh unreadable lock may be a holder still writing it"
    with pytest.raises(LakeLockedError, match="an unreadable lock"), lock.hold("run-b", "x", wait_seconds=0):
        pass
    started = time.monotonic()
    with lock.hold("run-b", "x", wait_seconds=30) as held:
        assert held["run_id"] == "run-b"
    assert time.monotonic() - started <= 1.0 + 0.2 + SLACK
    assert not path.exists()


def test_a_lease_whose_clock_runs_ahead_is_stale_after_one_unrenewed_lease(tmp_path):
    """A holder on a host whose clock is a day ahead wrote an expiry a day away and died: the waiter's own watch
    sees the lease unchanged for a whole lease and takes it over."""
    lock = RunLock(Lake(str(tmp_path / "lake")), lease_seconds=1.0, heartbeat_seconds=0.2)
    _write_lock(tmp_path / "lake", expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(), host="skewed")
    started = time.monotonic()
    with lock.hold("run-b", "x", wait_seconds=30) as held:
        assert held["run_id"] == "run-b"
    assert 1.0 <= time.monotonic() - started <= 1.0 + 0.2 + SLACK


def test_a_retry_of_the_same_flow_run_takes_its_own_lock_back_at_once(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    _write_lock(tmp_path / "lake", run_id="run-c", expires_at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
    with lock.hold("run-c", "x", wait_seconds=0) as held:
        assert held["token"] != "t0"
    assert lock.holder() is None


def _race(lock: RunLock, n: int) -> list[str]:
    """``n`` threads try to take the lock at once (none waits); the winner holds it until every other has
    tried and failed, so a slow thread cannot come after the winner let go. The winners."""
    won, lost, start = [], [], threading.Barrier(n)

    def contender(i: int) -> None:
        start.wait()
        try:
            with lock.hold(f"run-{i}", "x", wait_seconds=0):
                won.append(f"run-{i}")
                deadline = time.monotonic() + 60
                while len(lost) + len(won) < n and time.monotonic() < deadline:
                    time.sleep(0.05)
        except LakeLockedError:
            lost.append(f"run-{i}")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_two_waiters_racing_for_a_stale_lease_cannot_both_win(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")))
    for _ in range(3):
        _write_lock(tmp_path / "lake")
        assert len(_race(lock, 8)) == 1
    assert lock.holder() is None


def test_two_processes_racing_for_a_stale_lease_cannot_both_win(tmp_path):
    """The same race between processes (the flock guard is the kernel's, not this process's)."""
    _write_lock(tmp_path / "lake")
    go = tmp_path / "go"
    script = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from lakehouse.backends import Lake
from lakehouse.backends.run_lock import LakeLockedError, RunLock
lock, go = RunLock(Lake(sys.argv[2])), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
try:
    with lock.hold(sys.argv[4], "x", wait_seconds=0):
        print("won", flush=True)
        deadline = time.monotonic() + 60  # hold until the others have tried and lost
        while len(list(go.parent.glob("lost-*"))) < int(sys.argv[5]) - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
except LakeLockedError:
    (go.parent / f"lost-{sys.argv[4]}").touch()
    print("lost", flush=True)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(tmp_path / "lake"), str(go), f"p{i}", "4"],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    time.sleep(3)  # every contender has imported and waits for the start
    go.touch()
    results = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(results) == ["lost", "lost", "lost", "won"]


def test_a_holder_whose_lease_was_taken_over_fails_after_its_block(tmp_path):
    lock = RunLock(Lake(str(tmp_path / "lake")), lease_seconds=1.0, heartbeat_seconds=0.2)
    with pytest.raises(LakeLockLostError, match="taken over"), lock.hold("run-a", "x", wait_seconds=0):
        lock.unlock(force=True)
        _write_lock(tmp_path / "lake", run_id="run-b", token="t-b",
                    expires_at=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())
        time.sleep(1.0)
    assert lock.holder()["run_id"] == "run-b", "the holder that lost its lease does not delete the new holder's"


def test_unlock_clears_a_stale_lock_and_refuses_a_live_one_without_force(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lock = RunLock(lake)
    assert lock.unlock() is None
    _write_lock(tmp_path / "lake")
    assert lock.unlock().body["run_id"] == "run-gone" and lock.holder() is None
    with lock.hold("run-a", "x", wait_seconds=0):
        with pytest.raises(LakeLockedError, match="run run-a .* is live.*--force"):
            lock.unlock()
        assert lock.holder()["run_id"] == "run-a"
        assert lock.unlock(force=True).body["run_id"] == "run-a"
        assert lock.holder() is None


def test_status_shows_the_lock_and_unlock_clears_a_stale_one(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lakehouse.flows.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    lake = tmp_path / "lake"
    runner = CliRunner()
    live = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    _write_lock(lake, expires_at=live)
    shown = runner.invoke(app, ["status", "--lake-root", str(lake)])
    assert "run lock: held by run run-gone (daily-lakehouse 2026-11-01" in shown.output
    assert f"lease expires {live[:19]}" in shown.output and "live" in shown.output
    refused = runner.invoke(app, ["unlock", "--lake-root", str(lake)])
    assert refused.exit_code == 2 and "is live" in refused.output and "--force" in refused.output
    assert RunLock(Lake(str(lake))).holder()["run_id"] == "run-gone"
    _write_lock(lake)
    assert "stale" in runner.invoke(app, ["status", "--lake-root", str(lake)]).output
    cleared = runner.invoke(app, ["unlock", "--lake-root", str(lake)])
    assert cleared.exit_code == 0 and "cleared the run lock of run run-gone" in cleared.output
    assert RunLock(Lake(str(lake))).holder() is None
    assert "run lock: free" in runner.invoke(app, ["status", "--lake-root", str(lake)]).output
    _write_lock(lake, expires_at=live)
    forced = runner.invoke(app, ["unlock", "--force", "--lake-root", str(lake)])
    assert forced.exit_code == 0 and RunLock(Lake(str(lake))).holder() is None


def test_on_s3_the_lease_is_a_conditional_put(aws):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lock-lake")
    lock = RunLock(Lake("s3://lock-lake/prod/lake"), lease_seconds=1.0, heartbeat_seconds=0.2)
    with lock.hold("run-a", "x", wait_seconds=0):
        body = json.loads(s3.get_object(Bucket="lock-lake", Key="prod/lake/_locks/runs.json")["Body"].read())
        assert body["run_id"] == "run-a"
        time.sleep(1.5)
        assert lock.holder()["expires_at"] > body["expires_at"], "the lease is renewed on S3 too"
        with pytest.raises(LakeLockedError, match="run run-a"), lock.hold("run-b", "x", wait_seconds=0.5):
            pass
    assert lock.holder() is None
    # A stale lease on S3 is taken over by exactly one of the racing waiters.
    stale = {"token": "t0", "run_id": "run-gone", "what": "x", "host": "pod-gone", "pid": 1,
             "acquired_at": "2026-11-01T06:00:00+00:00", "expires_at": "2026-11-01T06:01:00+00:00"}
    s3.put_object(Bucket="lock-lake", Key="prod/lake/_locks/runs.json", Body=json.dumps(stale).encode())
    assert len(_race(RunLock(Lake("s3://lock-lake/prod/lake")), 6)) == 1
    assert lock.holder() is None
    s3.put_object(Bucket="lock-lake", Key="prod/lake/_locks/runs.json", Body=json.dumps(stale).encode())
    assert lock.unlock().body["run_id"] == "run-gone" and lock.holder() is None
