"""The lake's run lock: one pipeline run writes a lake at a time, so two runs (of the same date or not) never
interleave their writes.

The lock is a **lease**: one small object, ``<lake>/_locks/<name>.json``, naming its holder (run id, what it
runs, host, process, since when) and when the lease expires. While the holder runs, a heartbeat thread renews
the lease every ``heartbeat_seconds`` (the expiry moves ``lease_seconds`` ahead); the holder deletes it when it
is done. A lease not renewed in time is **stale**, whatever host, process id or container wrote it: a killed
run, a restarted container (whose next run has the same PID), a pod that is gone. Staleness is judged by the
lease's own expiry and, against clocks that disagree, by the waiter's own watch: a lease seen unchanged for
``lease_seconds`` is stale too. A lock file that cannot be read (empty, cut short) is stale once it is older
than ``lease_seconds``. A retry of the same flow run takes its own lock back at once.

Every change of the lock is a compare-and-swap, so two waiters cannot both take over a stale lease and a holder
never renews or deletes a lease that is no longer its own:

* local lake: each change is made under an exclusive ``flock`` of ``_locks/<name>.json.guard`` (the kernel
  drops it when a process dies) and written to a temporary file, then renamed over the lock;
* S3: a conditional ``PutObject`` (``If-None-Match: *`` to create, ``If-Match: <etag>`` to renew or take over)
  and a conditional ``DeleteObject`` (``If-Match``).

``lakehouse status`` shows the lock; ``lakehouse unlock`` deletes a stale one (``--force``: a live one).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse.backends.lake import Lake
from lakehouse.contracts.logs import LOCKS

if TYPE_CHECKING:
    from lakehouse.deployments.settings import Settings


class LakeLockedError(RuntimeError):
    """Another run holds the lake's run lock and did not finish within the wait, or a live lock was asked to
    be cleared without ``--force``."""


class LakeLockLostError(RuntimeError):
    """The holder's lease was taken over while it ran (it was not renewed in time)."""


@dataclass(frozen=True)
class Lease:
    """The lock as found: its body (None when unreadable), its version tag (what a compare-and-swap compares)
    and when it was last written."""

    body: dict[str, Any] | None
    tag: str
    written_at: datetime

    @property
    def token(self) -> str | None:
        return None if self.body is None else self.body.get("token")

    def expires_at(self, lease_seconds: float) -> datetime:
        """When the lease runs out: the holder's own expiry, or (unreadable) its write time plus a lease."""
        if self.body is not None:
            try:
                return datetime.fromisoformat(self.body["expires_at"])
            except (KeyError, TypeError, ValueError):
                pass
        return self.written_at + timedelta(seconds=lease_seconds)

    def describe(self, lease_seconds: float) -> str:
        """One line for people: who holds the lock, since when, until when."""
        expiry = self.expires_at(lease_seconds).isoformat(timespec="seconds")
        if self.body is None:
            return (f"an unreadable lock (written {self.written_at.isoformat(timespec='seconds')}, "
                    f"stale after {expiry})")
        b = self.body
        return (f"run {b.get('run_id')} ({b.get('what')}, pid {b.get('pid')} on {b.get('host')}, since "
                f"{b.get('acquired_at')}, lease expires {expiry})")


@dataclass(frozen=True)
class RunLock:
    lake: Lake
    name: str = "runs"
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.5

    @classmethod
    def of(cls, settings: Settings) -> RunLock:
        """The run lock of ``settings``' lake with its lease and heartbeat."""
        return cls(Lake(settings.lake_root), lease_seconds=settings.run_lock_lease_seconds,
                   heartbeat_seconds=settings.run_lock_heartbeat_seconds)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_seconds <= self.lease_seconds / 2:
            msg = (f"expected a heartbeat of more than 0 s and at most half the lease ({self.lease_seconds:g} s), "
                   f"got {self.heartbeat_seconds:g} s")
            raise ValueError(msg)

    @property
    def relative(self) -> str:
        return f"{LOCKS}/{self.name}.json"

    # ------------------------------------------------------------------------------------- storage
    def _path(self) -> Path:
        return Path(self.lake.path_uri(self.relative))

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Local lake: an exclusive flock around one read-compare-write of the lock."""
        import fcntl

        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".guard"), "a+b") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def read(self) -> Lease | None:
        """The lock as it is now (None: nobody holds it)."""
        if self.lake.is_local:
            try:  # body and tag of one and the same file: a rename over the lock may come between two calls
                with open(self._path(), "rb") as handle:
                    st, raw = os.fstat(handle.fileno()), handle.read()
            except FileNotFoundError:
                return None
            tag = f"{st.st_ino}:{st.st_mtime_ns}:{hashlib.sha256(raw).hexdigest()}"  # each body is unique
            return Lease(_parse(raw), tag,
                         datetime.fromtimestamp(st.st_mtime, UTC))
        from botocore.exceptions import ClientError

        bucket, key = self.lake.s3_key(self.relative)
        try:
            got = self.lake.s3().get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return Lease(_parse(got["Body"].read()), got["ETag"], got["LastModified"].astimezone(UTC))

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (None: nobody, or an unreadable lock)."""
        found = self.read()
        return None if found is None else found.body

    def _swap(self, expected: Lease | None, body: dict[str, Any] | None) -> Lease | None | bool:
        """Replace the lock if it is still ``expected`` (None: absent) with ``body`` (None: delete it).
        Returns the new lease (None when deleted), or False when the lock had changed meanwhile."""
        raw = None if body is None else json.dumps(body).encode()
        if self.lake.is_local:
            with self._guard():
                now = self.read()
                if (now is None) != (expected is None) or (now is not None and now.tag != expected.tag):
                    return False
                path = self._path()
                if raw is None:
                    path.unlink(missing_ok=True)
                    return None
                tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
                with open(tmp, "wb") as handle:
                    handle.write(raw)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)  # a reader sees the old body or the new one, never half of one
                return self.read()
        from botocore.exceptions import ClientError

        bucket, key = self.lake.s3_key(self.relative)
        client = self.lake.s3()
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected.tag}
        try:
            if raw is None:
                client.delete_object(Bucket=bucket, Key=key, **condition)
                return None
            put = client.put_object(Bucket=bucket, Key=key, Body=raw, **condition)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                              "NoSuchKey", "404"):
                return False
            raise
        return Lease(body, put["ETag"], datetime.now(UTC))

    # ------------------------------------------------------------------------------------- staleness
    def is_stale(self, lease: Lease, *, now: datetime | None = None) -> bool:
        """The lease ran out (by the expiry it carries, or for an unreadable lock its age)."""
        return (now or datetime.now(UTC)) >= lease.expires_at(self.lease_seconds)

    def _body(self, token: str, run_id: str, what: str, acquired_at: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {"token": token, "run_id": run_id, "what": what, "host": socket.gethostname(), "pid": os.getpid(),
                "acquired_at": acquired_at, "renewed_at": now.isoformat(),
                "expires_at": (now + timedelta(seconds=self.lease_seconds)).isoformat(),
                "lease_seconds": self.lease_seconds}

    # -------------------------------------------------------------------------------------- locking
    @contextmanager
    def hold(self, run_id: str, what: str, *, wait_seconds: float,
             on_wait: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Hold the lock for the ``with`` block, renewing the lease; wait up to ``wait_seconds`` for another
        holder to finish or for its lease to run out. ``on_wait`` gets a line naming each holder waited for.
        Raises ``LakeLockLostError`` after the block when the lease was taken over meanwhile."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        seen: dict[str, float] = {}  # lease tag -> when this waiter first saw it (its own clock)
        told: set[str] = set()
        while True:
            found = self.read()
            if found is not None:
                first_seen = seen.setdefault(found.tag, time.monotonic())
                mine = found.body is not None and found.body.get("run_id") == run_id  # a retry of the same run
                unchanged = time.monotonic() - first_seen >= self.lease_seconds  # clocks that disagree
                if not (mine or self.is_stale(found) or unchanged):
                    if time.monotonic() >= deadline:
                        msg = (f"expected the lake {self.lake.root} to be free, but {found.describe(self.lease_seconds)}"
                               f" holds its run lock ({self.relative}); waited {wait_seconds:.0f} s. If that run is "
                               "dead, its lease runs out by itself; 'lakehouse unlock' clears a stale lock now")
                        raise LakeLockedError(msg)
                    if on_wait is not None and (found.token or found.tag) not in told:
                        told.add(found.token or found.tag)
                        on_wait(f"waiting for the lake's run lock, held by {found.describe(self.lease_seconds)}")
                    time.sleep(self.poll_seconds)
                    continue
            acquired_at = datetime.now(UTC).isoformat()  # when it is taken, not when the wait began
            lease = self._swap(found, self._body(token, run_id, what, acquired_at))
            if lease is False:
                continue  # someone else changed it first: look again
            break
        beat = _Heartbeat(self, lease, run_id, what, acquired_at, token)
        beat.start()
        try:
            yield lease.body
        finally:
            last = beat.stop()
            if last is not None:
                self._swap(last, None)
        if beat.lost is not None:
            msg = (f"the run lock of {self.lake.root} was taken over while this run held it ({beat.lost}): its lease "
                   f"was not renewed within {self.lease_seconds:g} s. Another run may have written the lake beside "
                   "this one; every table write is one commit, so run the date again")
            raise LakeLockLostError(msg)

    def unlock(self, *, force: bool = False) -> Lease | None:
        """Delete the lock if its lease ran out (``force``: even a live one); returns what was deleted (None:
        there was no lock). Refuses a live lease without ``force``, naming its holder."""
        while True:
            found = self.read()
            if found is None:
                return None
            if not force and not self.is_stale(found):
                msg = (f"expected a stale run lock, but {found.describe(self.lease_seconds)} is live: its holder "
                       "renewed it in time. Wait for it, or if you are sure that run is dead, use --force")
                raise LakeLockedError(msg)
            if self._swap(found, None) is not False:
                return found


@dataclass
class _Heartbeat:
    """Renews a held lease every ``heartbeat_seconds`` on a daemon thread until stopped."""

    lock: RunLock
    lease: Lease
    run_id: str
    what: str
    acquired_at: str
    token: str
    lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"run-lock-heartbeat-{self.run_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lock.heartbeat_seconds):
            with self._mutex:
                if self.lost is not None:
                    return
                try:
                    renewed = self.lock._swap(self.lease, self.lock._body(self.token, self.run_id, self.what,
                                                                         self.acquired_at))
                except Exception:  # noqa: BLE001, S112 - a storage hiccup: the next beat tries again
                    continue
                if renewed is False:
                    now = self.lock.read()
                    self.lost = "now held by " + (now.describe(self.lock.lease_seconds) if now else "nobody")
                    return
                self.lease = renewed

    def stop(self) -> Lease | None:
        """Stop renewing; the lease to delete (None: it was lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:
            return None if self.lost is not None else self.lease


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and body.get("token") else None
