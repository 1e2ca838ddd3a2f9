"""Running the daily flow's stages on EMR Serverless.

- ``package``: build the code archive and ship it with ``entrypoint.py`` to ``emr.code_uri``.
- ``entrypoint``: what spark-submit runs on the driver: one stage, one run date, the Spark engine.
- ``jobs``: submit a job run with boto3, poll it with backoff, cancel it, find its driver log.
- ``iam``: the IAM policies (``*.json`` here) rendered for the settings' buckets and prefixes.

The Prefect flow that uses them is ``flows/emr.py``; the first-deployment runbook is ``docs/emr.md``.
"""

from __future__ import annotations

from typing import NamedTuple


class S3Location(NamedTuple):
    bucket: str
    key: str  # no leading or trailing slash; "" for the bucket's root

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
            msg = f"expected an s3://bucket/prefix URI, got {uri!r}"
            raise ValueError(msg)
        bucket, _, key = uri[5:].partition("/")
        return cls(bucket, key.strip("/"))

    def join(self, *parts: str) -> S3Location:
        return S3Location(self.bucket, "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/")))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
