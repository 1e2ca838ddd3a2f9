"""Secrets by reference: settings name where a secret is kept, never the secret itself.

A reference is ``prefect-secret:<block name>`` (a Prefect ``Secret`` block) or ``aws-secretsmanager:<secret id>``
(AWS Secrets Manager, through the standard AWS credential chain), optionally ending in ``#<field>`` to take one
field of a JSON secret. The value comes back as a ``SecretStr``: it is never logged, passed as a flow parameter
or written to the lake.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

SCHEMES = ("prefect-secret", "aws-secretsmanager")


class SecretNotFoundError(LookupError):
    """The reference is malformed, or nothing is kept where it points."""


def resolve_secret(ref: str, *, what: str) -> SecretStr:
    """The secret ``ref`` points at (``what`` names its use in errors, e.g. ``snowflake.secret``)."""
    scheme, _, rest = ref.partition(":")
    name, _, field = rest.partition("#")
    if scheme not in SCHEMES or not name:
        msg = (f"expected {what} as prefect-secret:<block name> or aws-secretsmanager:<secret id> (optionally "
               f"#<field> of a JSON secret), got {ref!r}")
        raise SecretNotFoundError(msg)
    value = _prefect_secret(name, what) if scheme == "prefect-secret" else _aws_secret(name, what)
    if field:
        value = _field(value, field, ref, what)
    if not isinstance(value, str) or not value:
        msg = f"expected {what} ({ref}) to hold a non-empty string, got a {type(value).__name__}"
        raise SecretNotFoundError(msg)
    return SecretStr(value)


def _prefect_secret(name: str, what: str) -> Any:
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        msg = (f"expected a Prefect Secret block named {name!r} for {what}, found none ({exc}); create it in the "
               f"Prefect UI (Blocks > Secret) or with Secret(value=...).save({name!r})")
        raise SecretNotFoundError(msg) from None


def _aws_secret(secret_id: str, what: str) -> Any:
    import boto3
    from botocore.exceptions import ClientError

    try:
        return boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        msg = (f"expected AWS Secrets Manager secret {secret_id!r} for {what}, got {code}; create it (aws "
               "secretsmanager create-secret) or grant secretsmanager:GetSecretValue to the flow's role")
        raise SecretNotFoundError(msg) from None


def _field(value: Any, field: str, ref: str, what: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict) or field not in value:
        keys = sorted(value) if isinstance(value, dict) else "not a JSON object"
        msg = f"expected field {field!r} in the JSON secret of {what} ({ref}), got {keys}"
        raise SecretNotFoundError(msg)
    return value[field]


def use_aws_credentials_block(name: str) -> None:
    """Make the prefect-aws ``AwsCredentials`` block ``name`` this process's AWS credentials: its keys (or profile)
    and region go to the standard AWS environment variables, which every S3 client of the run reads (delta-rs,
    Polars, boto3). Without a block the standard chain applies (environment, profile, instance role)."""
    import os

    from prefect_aws import AwsCredentials

    try:
        block = AwsCredentials.load(name)
    except ValueError as exc:
        msg = (f"expected a prefect-aws AwsCredentials block named {name!r} (setting aws_credentials_block), found "
               f"none ({exc}); create it in the Prefect UI (Blocks > AWS Credentials) or leave the setting empty "
               "to use the standard AWS credential chain")
        raise SecretNotFoundError(msg) from None
    values = {
        "AWS_ACCESS_KEY_ID": block.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": block.aws_secret_access_key.get_secret_value() if block.aws_secret_access_key else None,
        "AWS_SESSION_TOKEN": block.aws_session_token,
        "AWS_PROFILE": block.profile_name,
        "AWS_REGION": block.region_name, "AWS_DEFAULT_REGION": block.region_name,
    }
    for key, value in values.items():
        if value:
            os.environ[key] = value
