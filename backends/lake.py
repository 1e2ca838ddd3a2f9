"""Where the lake is: the root (a folder or ``s3://bucket/prefix``) and how to reach it.

Table locations are the catalog's relative paths under this root; this is the one place they are joined.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from contracts.catalog import TableSpec


class LakeNotWritableError(OSError):
    """The lake root cannot be created or written."""


class UnportableTableError(RuntimeError):
    """A table uses a Delta feature that not every engine of the project reads."""


# Every table must be readable by delta-rs (laptop), Sail and delta-spark (EMR): these features are refused.
UNPORTABLE_FEATURES = frozenset({"deletionVectors", "columnMapping", "v2Checkpoint", "icebergCompatV1",
                                 "icebergCompatV2", "typeWidening", "variantType"})
# Table properties set when a table is created, so that no engine turns those features on by default.
PORTABLE_TABLE_PROPERTIES: dict[str, str | None] = {"delta.enableDeletionVectors": "false"}


@dataclass(frozen=True)
class Lake:
    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    table_configuration: dict[str, str | None] | None = field(default_factory=lambda: dict(PORTABLE_TABLE_PROPERTIES))

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    @property
    def local_root(self) -> Path:
        return Path(self.root.removeprefix("file://")).resolve()

    def uri(self, spec: TableSpec) -> str:
        if self.is_local:
            return str(self.local_root / spec.path)
        return f"{self.root.rstrip('/')}/{spec.path}"

    def check_writable(self) -> None:
        """Fail early, naming the root, when a local lake cannot be written."""
        if not self.is_local:
            return
        root = self.local_root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"expected a writable lake root, got {str(root)!r} ({exc.strerror}); pass --lake-root or set LAKEHOUSE_LAKE_ROOT"
            raise LakeNotWritableError(msg) from exc
        if not os.access(root, os.W_OK | os.X_OK):
            msg = f"expected a writable lake root, got {str(root)!r} (permission denied); pass --lake-root or set LAKEHOUSE_LAKE_ROOT"
            raise LakeNotWritableError(msg)

    def prepare(self, spec: TableSpec) -> None:
        if self.is_local:
            self.check_writable()
            Path(self.uri(spec)).mkdir(parents=True, exist_ok=True)

    def check_features(self, spec: TableSpec) -> None:
        """Refuse a table whose protocol needs a feature one of the engines cannot read."""
        from deltalake import DeltaTable

        protocol = DeltaTable(self.uri(spec), storage_options=self.storage_options or None).protocol()
        used = set(protocol.reader_features or ()) | set(protocol.writer_features or ())
        bad = sorted(used & UNPORTABLE_FEATURES)
        if bad:
            msg = (f"expected {spec.name} ({self.uri(spec)}) to use only Delta features every engine reads, "
                   f"got {bad}; recreate it without them (see backends/lake.py PORTABLE_TABLE_PROPERTIES)")
            raise UnportableTableError(msg)
