"""The lake's run lock: one pipeline run writes a lake at a time, so two runs (of the same date or not) never
interleave their writes.

The lock is one small object, ``<lake>/_locks/<name>.json``, created only if absent (``O_CREAT | O_EXCL`` on a
local lake, a conditional ``PutObject`` with ``If-None-Match: *`` on S3) and deleted by its holder. It names
the holder (run id, run date, host, process, time). A run that finds it waits, polling, and fails after
``wait_seconds`` with the holder's name. A lock is taken over only when its holder is provably gone: the same
flow run (a retry after the process died), or a dead process on this host.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.lake import Lake


class LakeLockedError(RuntimeError):
    """Another run holds the lake's run lock and did not finish within the wait."""


@dataclass(frozen=True)
class RunLock:
    lake: Lake
    name: str = "runs"

    @property
    def relative(self) -> str:
        return f"_locks/{self.name}.json"

    # ------------------------------------------------------------------------------------- storage
    def _create(self, body: bytes) -> bool:
        if self.lake.is_local:
            path = Path(self.lake.path_uri(self.relative))
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
            return True
        from botocore.exceptions import ClientError

        bucket, key = self.lake.s3_key(self.relative)
        try:
            self.lake.s3().put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (None: nobody)."""
        try:
            if self.lake.is_local:
                return json.loads(Path(self.lake.path_uri(self.relative)).read_bytes())
            bucket, key = self.lake.s3_key(self.relative)
            return json.loads(self.lake.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        except Exception as exc:  # S3: a missing key
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def _delete(self, token: str) -> None:
        held = self.holder()
        if held is None or held.get("token") != token:
            return  # taken over (its holder was gone) or already released: not ours to delete
        if self.lake.is_local:
            Path(self.lake.path_uri(self.relative)).unlink(missing_ok=True)
        else:
            bucket, key = self.lake.s3_key(self.relative)
            self.lake.s3().delete_object(Bucket=bucket, Key=key)

    # -------------------------------------------------------------------------------------- locking
    def _gone(self, held: dict[str, Any], run_id: str) -> bool:
        if held.get("run_id") == run_id:
            return True  # this flow run held it in an attempt that died: a retry takes it back
        if held.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(held.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    @contextmanager
    def hold(self, run_id: str, what: str, *, wait_seconds: float,
             on_wait: Callable[[dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
        """Hold the lock for the ``with`` block; wait up to ``wait_seconds`` for another holder to finish."""
        token = uuid.uuid4().hex
        me = {"token": token, "run_id": run_id, "what": what, "host": socket.gethostname(), "pid": os.getpid()}
        deadline = time.monotonic() + wait_seconds
        told = False
        while not self._create(json.dumps(me | {"acquired_at": datetime.now(UTC).isoformat()}).encode()):
            held = self.holder()
            if held is not None and self._gone(held, run_id):
                self._delete(held.get("token", ""))
                continue
            if time.monotonic() >= deadline:
                msg = (f"expected the lake {self.lake.root} to be free, but run {held and held.get('run_id')} "
                       f"({held and held.get('what')}, pid {held and held.get('pid')} on {held and held.get('host')}, "
                       f"since {held and held.get('acquired_at')}) holds its run lock ({self.relative}); waited "
                       f"{wait_seconds:.0f} s. If that run is dead, delete the lock file and retry")
                raise LakeLockedError(msg)
            if held is not None and on_wait is not None and not told:
                on_wait(held)
                told = True
            time.sleep(0.5)
        try:
            yield self.holder() or me
        finally:
            self._delete(token)
