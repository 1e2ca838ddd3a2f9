"""Releases: which Delta version of each table of a layer readers see.

A release is one atomic append to the Delta table ``<lake>/_releases/<layer>``: one row per table with the
table's version, the release's sequence number and id, the run that made it and when. The current release
is the one with the highest sequence number. Writers write tables first, audit them, then release; readers
read the released versions, so a table rewritten by a run whose audit failed is never seen. The log is
written with delta-rs whichever engine wrote the tables (it is lake metadata, like ``_delta_log``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from lakehouse.backends.lake import Lake
from lakehouse.backends.logs import LakeLog, lake_log
from lakehouse.contracts.catalog import table


class NotReleasedError(LookupError):
    """A reader asked for a released table and there is no release (or the release lacks the table)."""


@dataclass(frozen=True)
class Release:
    release_id: str
    seq: int
    run_id: str
    run_date: date
    released_at: datetime
    versions: dict[str, int]


@dataclass(frozen=True)
class Releases:
    lake: Lake
    layer: str = "gold"

    @property
    def log(self) -> LakeLog:
        return lake_log(self.lake, "releases", layer=self.layer)

    @property
    def uri(self) -> str:
        return self.log.uri

    def history(self) -> list[Release]:
        """Every release, oldest first."""
        by_seq: dict[int, list[dict]] = {}
        for row in self.log.rows():
            by_seq.setdefault(row["seq"], []).append(row)
        return [Release(release_id=r[0]["release_id"], seq=seq, run_id=r[0]["run_id"], run_date=r[0]["run_date"],
                        released_at=r[0]["released_at"], versions={x["table"]: x["version"] for x in r})
                for seq, r in sorted(by_seq.items())]

    def current(self) -> Release | None:
        history = self.history()
        return history[-1] if history else None

    def version_of(self, table: str) -> int:
        """The released version of ``table``; a clear error when nothing released it."""
        current = self.current()
        if current is None:
            msg = (f"expected a {self.layer} release at {self.uri}, found none: {self.layer} tables are read at "
                   "released versions only; run the daily flow (lakehouse run --date D) to make one")
            raise NotReleasedError(msg)
        if table not in current.versions:
            msg = f"expected {table!r} in {self.layer} release {current.release_id}, it has {sorted(current.versions)}"
            raise NotReleasedError(msg)
        return current.versions[table]

    def publish(self, versions: dict[str, int], *, run_id: str, run_date: date) -> Release:
        """Make ``versions`` the current release, in one Delta commit."""
        if not versions:
            msg = f"expected at least one {self.layer} table version to release, got none"
            raise ValueError(msg)
        previous = self.current()
        seq = previous.seq + 1 if previous else 1
        release = Release(release_id=f"{self.layer}-{seq:06d}", seq=seq, run_id=run_id, run_date=run_date,
                          released_at=datetime.now(UTC), versions=dict(sorted(versions.items())))
        rows = [{"release_id": release.release_id, "seq": seq, "table": t, "version": v, "run_id": run_id,
                 "run_date": run_date, "released_at": release.released_at} for t, v in release.versions.items()]
        self.log.append(rows)
        return release

    def rollback(self, release_id: str, *, run_id: str) -> Release:
        """Make an earlier release's versions current again, as a new release (the log only grows, so the
        rollback itself shows in ``history`` and can be undone the same way)."""
        history = self.history()
        target = next((r for r in history if r.release_id == release_id), None)
        if target is None:
            known = ", ".join(r.release_id for r in history[-10:]) or "none"
            msg = f"expected a {self.layer} release id among the recent ones ({known}), got {release_id!r}"
            raise NotReleasedError(msg)
        if history[-1].versions == target.versions:
            msg = f"{release_id}'s versions are already the current ones ({history[-1].release_id}): nothing to roll back"
            raise ValueError(msg)
        unreadable = sorted(f"{name} version {version}" for name, version in target.versions.items()
                            if not self.lake.readable_version(table(name), version))
        if unreadable:
            msg = (f"expected {release_id}'s table versions to be readable, but delta-rs cleaned up the log of "
                   + ", ".join(unreadable) + " (older than the table's log retention); roll back to a newer release")
            raise ValueError(msg)
        gone = {name: len(missing) for name, version in target.versions.items()
                if (missing := self.lake.missing_files(table(name), version))}
        if gone:
            msg = (f"expected the files of {release_id}'s table versions to be there, but a vacuum deleted some ("
                   + ", ".join(f"{name}: {n} file(s)" for name, n in sorted(gone.items()))
                   + "); roll back to a release made within vacuum_retention_hours of the last vacuum")
            raise ValueError(msg)
        return self.publish(target.versions, run_id=run_id, run_date=target.run_date)
