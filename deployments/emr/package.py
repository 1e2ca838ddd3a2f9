"""How the code ships to EMR Serverless: one zip of the project's packages plus ``entrypoint.py``. In the zip
the packages sit under ``lakehouse/`` (``lakehouse/flows/daily.py``), the import namespace they install as.

The zip is built byte-for-byte reproducibly (sorted entries, fixed timestamps) and named by its content
hash, so ``<code_uri>/<digest>/`` always holds exactly the code a job run was submitted with, and shipping
the same code twice uploads nothing. Spark extracts it on the driver (``spark.archives=<zip>#lakehouse``).
Third-party dependencies come from a packed Python environment (``emr.python_archive``, see docs/emr.md).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.deployments.emr import S3Location

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backends", "contracts", "deployments", "flows", "tasks")
SHIPPED_SUFFIXES = (".py", ".toml", ".json")
ENTRYPOINT = Path(__file__).with_name("entrypoint.py")
ARCHIVE_NAME = "lakehouse.zip"
NAMESPACE = "lakehouse"  # the packages import as lakehouse.flows, lakehouse.tasks, ...


@dataclass(frozen=True)
class CodeBundle:
    archive: bytes
    entrypoint: bytes
    digest: str  # first 16 hex digits of sha256(archive + entrypoint)
    files: tuple[str, ...]


@dataclass(frozen=True)
class ShippedCode:
    archive_uri: str
    entrypoint_uri: str
    digest: str
    uploaded: int  # objects uploaded (0 when this code was already shipped)


def build(root: Path = ROOT) -> CodeBundle:
    """The code archive of the packages under ``root``, reproducible to the byte."""
    files = sorted(
        p.relative_to(root).as_posix()
        for pkg in PACKAGES
        for p in (root / pkg).rglob("*")
        if p.is_file() and p.suffix in SHIPPED_SUFFIXES and "__pycache__" not in p.parts
    )
    if not files:
        msg = f"expected the packages {PACKAGES} under {root}, found no files"
        raise FileNotFoundError(msg)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in files:
            info = zipfile.ZipInfo(f"{NAMESPACE}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (root / name).read_bytes())
    archive = buf.getvalue()
    entrypoint = ENTRYPOINT.read_bytes()
    digest = hashlib.sha256(archive + entrypoint).hexdigest()[:16]
    return CodeBundle(archive=archive, entrypoint=entrypoint, digest=digest, files=tuple(files))


def ship(bundle: CodeBundle, code_uri: str, s3: Any) -> ShippedCode:
    """Upload ``bundle`` under ``<code_uri>/<digest>/`` with the boto3 S3 client ``s3``, unless already there."""
    base = S3Location.parse(code_uri).join(bundle.digest)
    objects = {base.join(ARCHIVE_NAME): bundle.archive, base.join(ENTRYPOINT.name): bundle.entrypoint}
    uploaded = 0
    for loc, body in objects.items():
        if not _exists(s3, loc):
            s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=body,
                          ChecksumAlgorithm="SHA256", Metadata={"lakehouse-digest": bundle.digest})
            uploaded += 1
    archive_loc, entry_loc = objects
    return ShippedCode(archive_uri=archive_loc.uri, entrypoint_uri=entry_loc.uri, digest=bundle.digest,
                       uploaded=uploaded)


def _exists(s3: Any, loc: S3Location) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=loc.bucket, Key=loc.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
