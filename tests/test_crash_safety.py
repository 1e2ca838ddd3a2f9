"""A write killed while the engine writes a Delta checkpoint (tests/checkpoint_writer.py, a checkpoint after every
commit on a table of 1,500 files, so most of a commit's time is its checkpoint) leaves a table that both engines
read, holding whole batches only, and running the writer again converges to every batch exactly once. On the
Polars engine the writer process is killed (delta-rs writes in it); on Sail the Spark Connect server, which
writes the table, is killed with its client."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakehouse.testing.servers import start_sail, stop

ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "checkpoint_writer.py"
BATCHES = 40


def _batches(table: Path) -> list[int]:
    """The batches the table holds, one entry per row (delta-rs reads the log from its latest checkpoint)."""
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["batch"]).column("batch").to_pylist()
    return sorted(b for b in rows if b >= 0)


def _latest(log: Path) -> int:
    return max((int(p.name[:20]) for p in log.glob("*.json")), default=-1)


def _whole(batches: list[int]) -> bool:
    counts: dict[int, int] = {}
    for b in batches:
        counts[b] = counts.get(b, 0) + 1
    return all(c == 3 for c in counts.values())


def _writer(root: Path, remote: str | None) -> subprocess.Popen:
    args = [sys.executable, str(WRITER), str(root), "spark" if remote else "polars", str(BATCHES)] + (
        [remote] if remote else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["polars", "sail"])
def test_a_kill_during_checkpoint_writes_leaves_a_readable_table_and_the_rerun_converges(tmp_path, engine):

    rnd = random.Random(20261203)
    root = tmp_path / "lake"
    table = root / "bronze" / "kill" / "batches"
    log = table / "_delta_log"
    caught = 0  # kills that landed after a commit and before its checkpoint was written
    for attempt in range(4):
        server, remote = start_sail(tmp_path) if engine == "sail" else (None, None)
        writer = _writer(root, remote)
        try:
            assert writer.stdout.readline().strip() == "ready"
            # Kill the moment a chosen commit appears, before its checkpoint: that is when the checkpoint is
            # being written (the engine writes it right after the commit).
            target = log / f"{_latest(log) + rnd.randint(2, 6):020d}.json"
            deadline = time.monotonic() + 300
            while not target.exists() and writer.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            os.kill((server or writer).pid, signal.SIGKILL)
            writer.kill()
            writer.wait(timeout=60)
        finally:
            if server is not None:
                stop(server)
        assert target.exists(), f"the writer never committed {target.name}"
        latest = _latest(log)
        caught += latest == int(target.name[:20]) and not (log / f"{latest:020d}.checkpoint.parquet").exists()
        batches = _batches(table)
        assert batches and _whole(batches), "a killed write committed a whole batch or nothing"
    assert caught >= 1, "no kill landed between a commit and its checkpoint"

    # Both engines read the table the kills left, and a plain rerun of the writer converges.
    server, remote = start_sail(tmp_path) if engine == "sail" else (None, None)
    try:
        writer = _writer(root, remote)
        out, _ = writer.communicate(timeout=900)
        assert writer.returncode == 0, out
        if remote is not None:
            # The Spark Connect session class itself: pyspark.sql.SparkSession.builder.remote() would set
            # SPARK_REMOTE in this process's environment, and a classic JVM session started later would fail.
            from pyspark.sql.connect.session import SparkSession as ConnectSession

            spark = ConnectSession.builder.remote(remote).create()
            try:
                read = sorted(r.batch for r in spark.read.format("delta").load(str(table)).collect() if r.batch >= 0)
            finally:
                spark.stop()
            assert read == _batches(table)
    finally:
        if server is not None:
            stop(server)
    assert _batches(table) == sorted(b for b in range(BATCHES) for _ in range(3))
