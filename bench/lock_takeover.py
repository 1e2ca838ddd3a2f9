"""Benchmark: how long a run killed while it holds the lake's run lock blocks the next run.

    .venv/bin/python bench/lock_takeover.py --lease 10 --heartbeat 2 --repeat 5

Each round starts a process that takes the run lock of a fresh local lake (``backends/run_lock.py``, with the
given lease and heartbeat), kills it with SIGKILL part-way through a lease, and times the next holder from the
kill until it holds the lock. The bound is the lease: the last renewal came at most one heartbeat before the
kill, and the waiter takes the lease over once it expires (plus one poll, 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from lakehouse.backends import Lake
from lakehouse.backends.run_lock import RunLock
lock = RunLock(Lake(sys.argv[2]), lease_seconds=float(sys.argv[3]), heartbeat_seconds=float(sys.argv[4]))
held = lock.hold("killed", "a run that will be killed", wait_seconds=0)  # kept: collected, it would let go
held.__enter__()
print("held", flush=True)
time.sleep(3600)
"""


def one_round(lease: float, heartbeat: float) -> float:
    from lakehouse.backends import Lake
    from lakehouse.backends.run_lock import RunLock

    lake = str(Path(tempfile.mkdtemp(prefix="lock-bench-")) / "lake")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), lake, str(lease), str(heartbeat)],
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            msg = "the holder process did not take the lock"
            raise RuntimeError(msg)
        time.sleep(lease * 0.7)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        with RunLock(Lake(lake), lease_seconds=lease, heartbeat_seconds=heartbeat).hold(
                "next", "the next run", wait_seconds=lease * 10):
            return time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=10.0, help="lease seconds (the setting's default is 60)")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat seconds (default setting: 5)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    args = parser.parse_args(argv)
    took = [one_round(args.lease, args.heartbeat) for _ in range(args.repeat)]
    print(f"lease {args.lease:g} s, heartbeat {args.heartbeat:g} s: the next run held the lock "
          f"{statistics.median(took):.2f} s after the kill (median of {len(took)}; "
          f"min {min(took):.2f}, max {max(took):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
