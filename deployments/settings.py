"""The one settings model. Values come from, highest first: explicit overrides (CLI flags, flow parameters),
environment variables ``LAKEHOUSE_<FIELD>`` (nested with ``__``, e.g. ``LAKEHOUSE_SNOWFLAKE__HOST``), the
environment's file ``deployments/<env>.toml``, then the defaults below. Nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEPLOYMENTS_DIR = Path(__file__).resolve().parent
ENV_VAR = "LAKEHOUSE_ENV"


class SettingsError(ValueError):
    """Settings are missing or invalid; the message names the field, what was expected and where to fix it."""


def secret_reference(value: str) -> str:
    """``value`` if it is a secret reference (or empty); a field validator of every setting that names a secret."""
    if value and not re.fullmatch(r"(prefect-secret|aws-secretsmanager):[^\s#]+(#\w+)?", value):
        msg = ("expected a reference, prefect-secret:<block name> or aws-secretsmanager:<secret id> (optionally "
               "#<field>), never the secret itself")
        raise ValueError(msg)
    return value


class SnowflakeConnection(BaseModel):
    """How to reach one Snowflake database and schema (the publish target, or the Snowflake source)."""

    model_config = {"extra": "forbid", "populate_by_name": True}
    account: str = Field("", description="Snowflake account identifier")
    user: str = Field("", description="login name")
    host: str | None = Field(None, description="endpoint host; None means <account>.snowflakecomputing.com")
    port: int = Field(443, ge=1, le=65535, description="endpoint port")
    protocol: Literal["https", "http"] = Field("https", description="http only for a local test server")
    database: str = Field("ANALYTICS", description="database")
    schema_: str = Field("GOLD", alias="schema", description="schema")
    warehouse: str = Field("", description="virtual warehouse")
    role: str = Field("", description="role to assume")
    authenticator: Literal["password", "key_pair"] = Field(
        "password", description="password, or key_pair (the secret is then an unencrypted PEM private key)",
    )
    secret: str = Field(
        "", description="where the password or private key is kept: prefect-secret:<block name> or "
        "aws-secretsmanager:<secret id>, with #<field> for a JSON secret; never the secret itself",
    )
    login_timeout: int = Field(60, ge=1, description="seconds to keep trying to log in (transient errors)")
    network_timeout: int = Field(600, ge=1, description="seconds a statement may wait on the network")

    _a_reference = field_validator("secret")(lambda value: secret_reference(value))

    def require(self, where: str = "snowflake") -> SnowflakeConnection:
        """These settings, or an error naming every field a connection needs and lacks (``where``: their table)."""
        missing = [name for name in ("account", "user", "secret") if not getattr(self, name)]
        if missing:
            env = "LAKEHOUSE_" + "__".join(where.upper().split("."))
            msg = (f"expected {where}.{f', {where}.'.join(missing)} to connect to Snowflake, not set; set them in "
                   f"deployments/<env>.toml [{where}] or {env}__{missing[0].upper()}")
            raise SettingsError(msg)
        return self


class SnowflakeSettings(SnowflakeConnection):
    """Where gold is published (used by the Snowflake publish; not needed by the daily flow on a laptop)."""

    publish_with_daily: bool = Field(False, description="the daily flow publishes each gold release it makes")
    stage_file_rows: int = Field(
        1_000_000, ge=1, description="rows per Parquet file put on the staging table's stage (bounds memory)",
    )

    def require(self, where: str = "snowflake") -> SnowflakeSettings:
        """These settings, or an error naming every field the publish needs and lacks."""
        super().require(where)
        return self


class LineageSettings(BaseModel):
    """Where the OpenLineage run events of every task go (tasks/tracking.py)."""

    model_config = {"extra": "forbid"}
    transport: Literal["file", "http", "none"] = Field(
        "file", description="file: JSON lines under <lake>/_lineage; http: POST to url (Marquez-compatible); none",
    )
    url: str = Field("", pattern=r"^(https?://\S+)?$", description="base URL of the lineage receiver (http)")
    endpoint: str = Field("api/v1/lineage", min_length=1, description="path of the receiver's lineage endpoint")
    namespace: str = Field("lakehouse", min_length=1, description="OpenLineage job namespace")
    timeout_seconds: float = Field(5.0, gt=0, description="how long one event may take to deliver over HTTP")
    retries: int = Field(2, ge=0, le=10, description="retries of an event the receiver refused (429, 5xx) or missed")

    @model_validator(mode="after")
    def _url_for_http(self) -> LineageSettings:
        if self.transport == "http" and not self.url:
            msg = "expected lineage.url (e.g. http://marquez:5000) with lineage.transport = 'http', not set"
            raise ValueError(msg)
        return self


class SparkSettings(BaseModel):
    """How the Spark engine reaches Spark. Neither ``remote`` nor ``master``: an embedded Sail server (no JVM)."""

    model_config = {"extra": "forbid"}
    remote: str | None = Field(
        None, pattern=r"^sc://[^/\s]+:\d+(/.*)?$", description="Spark Connect URL, e.g. sc://127.0.0.1:50051",
    )
    master: str | None = Field(
        None, min_length=1, description="classic SparkSession master, e.g. yarn (EMR) or local[2] (needs Java 17)",
    )
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark conf for a classic session")

    @model_validator(mode="after")
    def _one_way_in(self) -> SparkSettings:
        if self.remote and self.master:
            msg = (f"expected either remote (Spark Connect) or master (classic Spark), got both: remote={self.remote!r}, "
                   f"master={self.master!r}")
            raise ValueError(msg)
        return self


# Delta on EMR Serverless: the jars ship with EMR 7 releases under /usr/share/aws/delta/lib (AWS documentation).
EMR_DELTA_CONF = {
    "spark.jars": "/usr/share/aws/delta/lib/delta-spark.jar,/usr/share/aws/delta/lib/delta-storage.jar",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


class EmrSettings(BaseModel):
    """Where the Spark engine's stages run in production: an EMR Serverless application (see docs/emr.md)."""

    model_config = {"extra": "forbid"}
    application_id: str = Field("", description="EMR Serverless application id")
    execution_role_arn: str = Field(
        "", pattern=r"^(arn:aws[\w-]*:iam::\d{12}:role/.+)?$", description="job runtime role ARN",
    )
    region: str = Field("us-east-1", min_length=1, description="AWS region of the application")
    code_uri: str = Field(
        "", pattern=r"^(s3://[^/\s]+(/\S*)?)?$", description="s3://bucket/prefix the code archive and entrypoint ship to",
    )
    log_uri: str = Field(
        "", pattern=r"^(s3://[^/\s]+(/\S*)?)?$", description="s3://bucket/prefix for driver and executor logs",
    )
    python_archive: str | None = Field(
        None, pattern=r"^s3://\S+$", description="packed Python environment with the dependencies (venv-pack)",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=lambda: dict(EMR_DELTA_CONF), description="--conf pairs for spark-submit (Delta by default)",
    )
    driver_env: dict[str, str] = Field(
        default_factory=dict, description="environment for the driver (no secrets: job configs are visible)",
    )
    timeout_minutes: int = Field(720, ge=5, description="EMR cancels a job run that runs longer")
    poll_seconds: float = Field(5.0, gt=0, description="first wait between status polls")
    poll_max_seconds: float = Field(60.0, gt=0, description="longest wait between polls (backoff doubles up to it)")

    def require(self) -> EmrSettings:
        """These settings, or an error naming every field a job submission needs and lacks."""
        missing = [name for name in ("application_id", "execution_role_arn", "code_uri", "log_uri")
                   if not getattr(self, name)]
        if missing:
            msg = (f"expected emr.{', emr.'.join(missing)} to submit to EMR Serverless, not set; set them in "
                   f"deployments/<env>.toml [emr] or LAKEHOUSE_EMR__{missing[0].upper()}")
            raise SettingsError(msg)
        return self


def _missing(where: str, fields: list[str], what: str) -> SettingsError:
    env = "LAKEHOUSE_" + "__".join(where.upper().split("."))
    return SettingsError(f"expected {where}.{f', {where}.'.join(fields)} to {what}, not set; set them in "
                         f"deployments/<env>.toml [{where}] or {env}__{fields[0].upper()}")


class RedshiftSettings(BaseModel):
    """Where customer behaviour is pulled from (PostgreSQL wire protocol)."""

    model_config = {"extra": "forbid", "populate_by_name": True}
    host: str = Field("", description="cluster endpoint host")
    port: int = Field(5439, ge=1, le=65535, description="port (Redshift: 5439)")
    database: str = Field("dev", min_length=1, description="database")
    schema_: str = Field("public", alias="schema", description="schema of the customer_behaviour table")
    user: str = Field("", description="login name")
    secret: str = Field("", description="where the password is kept: prefect-secret:<block> or aws-secretsmanager:<id>")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "require", description="TLS to the cluster (disable only for a local test server)")
    connect_timeout: int = Field(30, ge=1, description="seconds to wait for a connection")

    _a_reference = field_validator("secret")(lambda value: secret_reference(value))

    def require(self) -> RedshiftSettings:
        missing = [n for n in ("host", "user", "secret") if not getattr(self, n)]
        if missing:
            raise _missing("sources.redshift", missing, "connect to Redshift")
        return self


class HttpSourceSettings(BaseModel):
    """An HTTP API source: where it is and how hard to retry it."""

    model_config = {"extra": "forbid"}
    base_url: str = Field("", pattern=r"^(https?://\S+)?$", description="base URL of the API")
    timeout_seconds: float = Field(30.0, gt=0, description="how long one request may take")
    retries: int = Field(6, ge=0, le=20, description="retries of a 429, a 5xx or a dropped connection")
    backoff_seconds: float = Field(1.0, gt=0, description="first backoff when the server sends no Retry-After")
    max_wait_seconds: float = Field(60.0, gt=0, description="longest wait between two attempts (Retry-After capped)")

    def _require(self, where: str, what: str, fields: tuple[str, ...] = ("base_url",)) -> None:
        missing = [n for n in fields if not getattr(self, n)]
        if missing:
            raise _missing(where, missing, what)


class CrmSettings(HttpSourceSettings):
    """The HubSpot-style CRM API (contacts, companies, deals)."""

    token_secret: str = Field("", description="where the private-app token is kept: prefect-secret:<block> or "
                              "aws-secretsmanager:<id>")
    page_size: int = Field(100, ge=1, le=200, description="records per page (HubSpot allows up to 200)")

    _a_reference = field_validator("token_secret")(lambda value: secret_reference(value))

    def require(self) -> CrmSettings:
        self._require("sources.crm", "call the CRM API", ("base_url", "token_secret"))
        return self


class FxSettings(HttpSourceSettings):
    """The FX vendor's daily rates API."""

    def require(self) -> FxSettings:
        self._require("sources.fx", "call the FX vendor")
        return self


class KafkaSettings(BaseModel):
    """The Kafka topic of order events."""

    model_config = {"extra": "forbid"}
    bootstrap_servers: str = Field("", description="host:port[,host:port...]")
    topic: str = Field("orders", min_length=1, description="topic of order events")
    group_id: str = Field("lakehouse-bronze", min_length=1, description="consumer group whose offsets are committed")
    batch_messages: int = Field(10_000, ge=1, description="messages asked for per poll")
    timeout_seconds: float = Field(30.0, gt=0, description="how long a poll or a metadata request may wait")
    conf: dict[str, str] = Field(default_factory=dict, description="more librdkafka settings (no secrets)")

    def require(self) -> KafkaSettings:
        if not self.bootstrap_servers:
            raise _missing("sources.kafka", ["bootstrap_servers"], "consume order events")
        return self


def known_entities(names: Any) -> Any:
    """``names`` (landing entity names, or a mapping keyed by them), or an error naming the known ones."""
    from lakehouse.contracts.landing import LANDING_ENTITIES

    known = {e.name for e in LANDING_ENTITIES}
    unknown = sorted(set(names) - known)
    if unknown:
        msg = f"expected entity names among {sorted(known)}, got {unknown}"
        raise ValueError(msg)
    return names


class SourcesSettings(BaseModel):
    """Where each landing entity comes from: files under landing_root (default) or its connector."""

    model_config = {"extra": "forbid"}
    entities: dict[str, Literal["files", "connector"]] = Field(
        default_factory=dict, description='entity -> files | connector, e.g. {"snowflake.orders" = "connector"}',
    )
    file_rows: int = Field(50_000, ge=1, description="rows per landing file a connector writes (bounds memory)")
    batch_rows: int = Field(10_000, ge=1, description="rows per fetch from a SQL source")
    first_from: str = Field("", pattern=r"^(\d{4}-\d{2}-\d{2})?$",
                            description="first watermark of a first extract (YYYY-MM-DD); empty: everything")
    bronze_files_per_commit: int = Field(16, ge=1, description="landing files appended to bronze per commit")
    allow_missing: list[str] = Field(
        default_factory=list, description="entities delivered daily whose missing delivery does not stop a run "
                                          '(e.g. ["redshift.customer_behaviour"]); --allow-missing adds to it')
    snowflake: SnowflakeConnection = Field(
        default_factory=lambda: SnowflakeConnection(database="RAW", schema="PUBLIC"))
    redshift: RedshiftSettings = Field(default_factory=RedshiftSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    fx: FxSettings = Field(default_factory=FxSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @field_validator("entities", "allow_missing")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return known_entities(value)

    def kind(self, entity_name: str) -> str:
        """``files`` or ``connector`` for ``entity_name``."""
        return self.entities.get(entity_name, "files")

    def require_connectors(self) -> None:
        """An error naming what a connector chosen in ``entities`` lacks (checked before a run writes anything)."""
        systems = {name.split(".", 1)[0] for name, kind in self.entities.items() if kind == "connector"}
        for system in sorted(systems):
            getattr(self, system).require(*(("sources.snowflake",) if system == "snowflake" else ()))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_", env_nested_delimiter="__", extra="forbid", validate_default=True,
        populate_by_name=True,
    )

    env: str = Field("local", description="environment name: selects deployments/<env>.toml")
    backend: Literal["polars", "spark"] = Field("polars", description="engine that runs the tasks")
    lake_root: str = Field("./lake", min_length=1, description="lake folder or s3://bucket/prefix")
    landing_root: str = Field("./landing", min_length=1, description="folder of landing files (see README)")
    hmac_key: SecretStr | None = Field(
        None, min_length=16,
        description="key for pseudonymising e-mail and phone (HMAC-SHA256), needed by silver; never logged",
    )
    hmac_key_secret: str = Field(
        "", description="where the HMAC key is kept, wins over hmac_key: prefect-secret:<block name> or "
        "aws-secretsmanager:<secret id>, with #<field> for a JSON secret; never the key itself",
    )
    fx_window_days: int = Field(
        4, ge=0, le=31, description="how many days an FX rate may be older than the order it converts"
    )
    lookback_days: int = Field(
        3, ge=0, le=60,
        description="how many days late an order change or order event may arrive and still flow into gold by "
        "itself (later ones are quarantined as late.beyond_lookback, for a replay)",
    )
    aws_credentials_block: str = Field(
        "", description="name of a prefect-aws AwsCredentials block for an S3 lake and result storage; empty: the "
        "standard AWS credential chain (environment, profile, instance role)",
    )
    result_storage: str | None = Field(
        None, description="where Prefect keeps task results for retries that resume: a folder or "
        "s3://bucket/prefix; None means <lake_root>/_results",
    )
    run_lock_wait_seconds: float = Field(
        900.0, ge=0, description="how long a run waits for another run of the lake to finish before failing",
    )
    run_lock_lease_seconds: float = Field(
        60.0, gt=0, description="how long the run lock's lease lasts without a renewal: a lock not renewed for "
        "this long (its run was killed) is stale and the next run takes it over",
    )
    run_lock_heartbeat_seconds: float = Field(
        5.0, gt=0, description="how often a run renews its lease on the run lock (at most half the lease)",
    )
    vacuum_retention_hours: float = Field(
        168.0, ge=0, description="how long a vacuum keeps the files a table replaced (older versions read them); "
        "the current gold release and the releases made within it are always kept",
    )
    stream_commit_max_files: int = Field(
        64, ge=1, description="Kafka micro-batch files applied per bronze commit (one checkpoint row each)",
    )
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    emr: EmrSettings = Field(default_factory=EmrSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _heartbeat_within_the_lease(self) -> Settings:
        if self.run_lock_heartbeat_seconds > self.run_lock_lease_seconds / 2:
            msg = (f"expected run_lock_heartbeat_seconds at most half of run_lock_lease_seconds "
                   f"({self.run_lock_lease_seconds:g} s), got {self.run_lock_heartbeat_seconds:g} s")
            raise ValueError(msg)
        return self

    _hmac_reference = field_validator("hmac_key_secret")(lambda value: secret_reference(value))

    def require_hmac_key(self) -> bytes:
        """The pseudonymisation key, or an error saying where to set it (silver needs it; other commands do not).
        From ``hmac_key_secret`` when set (resolved once per process), else ``hmac_key``."""
        if self.hmac_key_secret:
            return _secret_key(self.hmac_key_secret)
        if self.hmac_key is None:
            msg = (f"expected hmac_key (at least 16 characters) to pseudonymise e-mail and phone in silver, not set for "
                   f"env {self.env!r}; set LAKEHOUSE_HMAC_KEY where the flow runs (never in a committed file)")
            raise SettingsError(msg)
        return self.hmac_key.get_secret_value().encode()


@lru_cache(maxsize=8)
def _secret_key(reference: str) -> bytes:
    from lakehouse.deployments.secrets import SecretNotFoundError, resolve_secret

    key = resolve_secret(reference, what="hmac_key_secret").get_secret_value()
    if len(key) < 16:
        msg = f"expected the HMAC key at {reference} to have at least 16 characters, got {len(key)}"
        raise SecretNotFoundError(msg)
    return key.encode()


def available_envs() -> list[str]:
    return sorted(p.stem for p in DEPLOYMENTS_DIR.glob("*.toml"))


def load_settings(env: str | None = None, **overrides: Any) -> Settings:
    """Settings for ``env`` (default: $LAKEHOUSE_ENV, else ``local``), with ``overrides`` on top (None is ignored)."""
    env = env or os.environ.get(ENV_VAR) or "local"
    if not (DEPLOYMENTS_DIR / f"{env}.toml").is_file():
        msg = f"expected an environment among {available_envs()}, got {env!r}; add deployments/{env}.toml or use --env local"
        raise SettingsError(msg)
    given = {k: v for k, v in overrides.items() if v is not None}
    # Flat overrides of nested fields (CLI flags, flow parameters): spark_remote -> spark.remote.
    for flat, (group, name) in _FLAT_OVERRIDES.items():
        if flat in given:
            given.setdefault(group, {})[name] = given.pop(flat)
    per_env = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": DEPLOYMENTS_DIR / f"{env}.toml"}})
    try:
        return per_env(env=env, **given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            if not {"hmac_key", "hmac_key_secret", "secret", "token_secret"} & {str(p) for p in e["loc"]}  # never echo what may be a secret
            else f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        msg = f"invalid settings for env {env!r}: {problems}; fix deployments/{env}.toml or the LAKEHOUSE_* variables"
        raise SettingsError(msg) from None


_FLAT_OVERRIDES = {"spark_remote": ("spark", "remote"), "spark_master": ("spark", "master")}


@lru_cache(maxsize=16)
def cached_settings(env: str, overrides: tuple[tuple[str, Any], ...]) -> Settings:
    return load_settings(env, **dict(overrides))
