"""The IAM policies of the EMR path, rendered for one environment's settings.

- ``execution-role-policy.json``: the job runtime role. Read and write under the lake prefix, read under the
  landing and code prefixes, write under the log prefix; nothing else in S3.
- ``submitter-policy.json``: whoever runs ``flows/emr.py`` (the Prefect worker's role). Start, follow and
  cancel job runs of the one application, pass the one job role to EMR Serverless, ship code, read driver logs.

The JSON files are the source; ``render`` fills in buckets, prefixes, region, account and ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any, Literal

from lakehouse.deployments.emr import S3Location
from lakehouse.deployments.settings import Settings, SettingsError

HERE = Path(__file__).resolve().parent
POLICIES = {"execution": HERE / "execution-role-policy.json", "submitter": HERE / "submitter-policy.json"}


def render(settings: Settings, which: Literal["execution", "submitter"]) -> dict[str, Any]:
    """The ``which`` policy document for ``settings`` (an ``s3://`` lake and landing, and ``emr.*`` set)."""
    emr = settings.emr.require()
    values: dict[str, str] = {}
    for name, uri in {"LAKE": settings.lake_root, "LANDING": settings.landing_root, "CODE": emr.code_uri,
                      "LOG": emr.log_uri}.items():
        loc = _prefix(name.lower(), uri)
        values |= {f"{name}_BUCKET": loc.bucket, f"{name}_PREFIX": loc.key}
    values |= {"REGION": emr.region, "ACCOUNT": emr.execution_role_arn.split(":")[4],
               "APPLICATION_ID": emr.application_id, "EXECUTION_ROLE_ARN": emr.execution_role_arn}
    return json.loads(Template(POLICIES[which].read_text()).substitute(values))


def _prefix(name: str, uri: str) -> S3Location:
    try:
        loc = S3Location.parse(uri)
    except ValueError:
        loc = None
    if loc is None or not loc.key:
        msg = (f"expected the {name} root as s3://bucket/prefix (a prefix, so the policy can be scoped to it), "
               f"got {uri!r}")
        raise SettingsError(msg)
    return loc
