"""Where files live when the root is an S3 prefix: :class:`S3Path`, the part of ``pathlib.Path``'s interface that the
landing reader, the landing writers and the run's fingerprints use, over Arrow's S3 filesystem (the standard AWS
credential chain, ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` as delta-rs and Sail read them).

``root_path("s3://bucket/landing")`` is an :class:`S3Path`, any other root a resolved local ``Path``; code written
against a local folder runs unchanged on either. An S3 "folder" is a key prefix: it exists while an object lies
under it, and ``mkdir`` does nothing. A file is written whole by :meth:`S3Path.upload` (an object is never seen
half written).
:func:`check_bucket` answers, within seconds, whether a root's bucket can be reached, naming the root and what to
check when it cannot.
"""

from __future__ import annotations

import fnmatch
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where an S3 path is used: a local lake never needs it (0.15 s)
    import pyarrow.fs as pafs


class UnreachableRootError(OSError):
    """An S3 root's bucket does not exist, has no credentials or does not answer."""


def root_path(root: str | Path | S3Path) -> Path | S3Path:
    """``root`` as a path: an :class:`S3Path` for ``s3://bucket/prefix``, else the local folder, resolved."""
    if isinstance(root, S3Path):
        return root
    if isinstance(root, Path):
        return root.resolve()
    if root.startswith("s3://"):
        return S3Path(root)
    return Path(root.removeprefix("file://")).resolve()


@dataclass(frozen=True)
class S3Stat:
    st_size: int
    st_mtime_ns: int


def _filesystem() -> pafs.S3FileSystem:
    """Arrow's S3 filesystem for the credentials and endpoint of this moment (a flow may load credentials into the
    environment after start-up), one per such set."""
    import pyarrow.fs as pafs

    key = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                             "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                                             "AWS_DEFAULT_REGION"))
    found = _FILESYSTEMS.get(key)
    if found is None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        options: dict[str, Any] = {"region": region, "connect_timeout": 5, "request_timeout": 60,
                                   "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
        if endpoint:
            scheme, _, rest = endpoint.partition("://")
            options |= {"endpoint_override": rest.rstrip("/"), "scheme": scheme or "https"}
        found = _FILESYSTEMS[key] = pafs.S3FileSystem(**options)
    return found


_FILESYSTEMS: dict[tuple[str | None, ...], pafs.S3FileSystem] = {}


class ArrowRaw(io.RawIOBase):
    """An Arrow input file or stream (a decompressing one, an S3 object) as a raw Python stream, so it can be
    buffered and read by lines; seekable when the Arrow file is."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self.stream.seekable())

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
        super().close()


class S3Path:
    """A file or folder ``s3://bucket/key``. Entries listed by :meth:`iterdir` carry their listing's type, size and
    time, so walking a folder costs one listing request, not one request per file."""

    def __init__(self, uri: str, *, _info: pafs.FileInfo | None = None) -> None:
        if not uri.startswith("s3://"):
            msg = f"expected an s3://bucket/prefix URI, got {uri!r}"
            raise ValueError(msg)
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket:
            msg = f"expected a bucket in {uri!r} (s3://bucket/prefix)"
            raise ValueError(msg)
        self.bucket, self.key = bucket, "/".join(p for p in key.split("/") if p)
        self._info = _info

    # ---- names
    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"S3Path({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Path) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: S3Path) -> bool:
        return self.uri < other.uri

    def __truediv__(self, part: str) -> S3Path:
        return S3Path(f"{self.uri}/{str(part).strip('/')}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def relative_to(self, root: S3Path) -> PurePosixPath:
        if root.bucket != self.bucket or not (self.key + "/").startswith((root.key + "/") if root.key else ""):
            msg = f"{self.uri!r} is not under {root.uri!r}"
            raise ValueError(msg)
        return PurePosixPath(self.key[len(root.key):].lstrip("/"))

    def resolve(self) -> S3Path:
        return self

    @property
    def _path(self) -> str:
        return f"{self.bucket}/{self.key}".rstrip("/")

    # ---- what is there
    def _file_info(self) -> pafs.FileInfo:
        if self._info is None:
            self._info = _filesystem().get_file_info(self._path)
        return self._info

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_info().type == pafs.FileType.File

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_info().type != pafs.FileType.NotFound

    def stat(self) -> S3Stat:
        import pyarrow.fs as pafs

        info = self._file_info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.uri)
        return S3Stat(info.size or 0, info.mtime_ns or 0)

    def iterdir(self) -> Iterator[S3Path]:
        """The files and folders directly under this folder (none when it does not exist)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path, allow_not_found=True)
        for info in _filesystem().get_file_info(selector):
            yield S3Path(f"s3://{info.path}", _info=info)

    def glob(self, pattern: str) -> Iterator[S3Path]:
        """Entries directly under this folder whose name matches ``pattern`` (no ``/`` or ``**``)."""
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    # ---- reading and writing
    def open(self, mode: str = "rb") -> Any:
        """A buffered, seekable file to read (``rb``; an object is written whole by :meth:`upload`)."""
        if mode == "rb":
            return io.BufferedReader(ArrowRaw(self.open_arrow()), buffer_size=1 << 20)
        msg = f"expected mode 'rb' for {self.uri} (objects are written by upload), got {mode!r}"
        raise ValueError(msg)

    def open_arrow(self) -> Any:
        """The object as an Arrow random-access file (ranged GETs)."""
        return _filesystem().open_input_file(self._path)

    def read_bytes(self) -> bytes:
        with self.open_arrow() as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def upload(self, local: Path) -> None:
        """Copy the local file ``local`` to this key (one object, whole or not at all)."""
        import pyarrow.fs as pafs

        self._info = None
        pafs.copy_files(str(local), self._path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=_filesystem())

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        return None

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            _filesystem().delete_file(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        self._info = None


@contextmanager
def local_copy(root: Path | S3Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local folder to write ``root``'s files in: ``root`` itself when it is local; for an S3 root a temporary
    folder holding the files named in ``keep`` (copied down, when they exist), whose files are all uploaded under
    ``root`` when the block ends without an error (nothing is uploaded after an error), the files named in
    ``keep`` last (a record of what was written lands after what it records)."""
    if isinstance(root, Path):
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="lakehouse-upload-") as tmp:
        folder = Path(tmp)
        for name in keep:
            remote = root / name
            if remote.exists():
                (folder / name).write_bytes(remote.read_bytes())
        yield folder
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in sorted(files, key=lambda p: (p.relative_to(folder).as_posix() in keep, p)):
            (root / path.relative_to(folder).as_posix()).upload(path)


def check_bucket(root: str, role: str, fix: str, timeout_s: float = 5.0) -> None:
    """For an ``s3://`` root: its bucket answers a HEAD with the credentials at hand, within seconds (short
    timeouts, one retry), or an :class:`UnreachableRootError` names the ``role`` ("lake root", "landing root"),
    the root, and what to check."""
    if not root.startswith("s3://"):
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = root.removeprefix("s3://").partition("/")[0]
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2, "mode": "standard"})
    try:
        boto3.session.Session().client("s3", config=config).head_bucket(Bucket=bucket)  # credentials resolved now
    except NoCredentialsError:
        msg = (f"expected AWS credentials to reach the {role} {root!r}, found none: set AWS_PROFILE or "
               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance or job role provides them")
        raise UnreachableRootError(msg) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            msg = f"expected the bucket {bucket!r} of the {role} {root!r} to exist, it does not; {fix}"
        elif code in ("403", "AccessDenied", "Forbidden"):
            msg = (f"expected access to the bucket {bucket!r} of the {role} {root!r}, got access denied: check the "
                   "credentials' role and its policy ('lakehouse emr policy execution' prints one)")
        else:
            msg = f"expected the bucket {bucket!r} of the {role} {root!r} to answer, got {code}: {exc}"
        raise UnreachableRootError(msg) from None
    except BotoCoreError as exc:  # endpoint unreachable, timeouts, bad endpoint URL
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS S3"
        msg = (f"expected S3 at {endpoint} to answer for the {role} {root!r}, it did not within {timeout_s:.0f} s "
               f"({type(exc).__name__}): check the network, the region and AWS_ENDPOINT_URL")
        raise UnreachableRootError(msg) from None


AnyPath = Path | S3Path  # a local path or an S3 one: what landing code takes
