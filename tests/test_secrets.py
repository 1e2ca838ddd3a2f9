"""Secrets by reference in the daily pipeline: the HMAC key from a Prefect Secret block or AWS Secrets Manager
(moto's server), and a canary key that must appear in no log, artifact, parameter, ledger row or lake file."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lakehouse.backends.lake import Lake
from lakehouse.tasks.ledger import read_ledger

pytestmark = pytest.mark.slow

CANARY = "canary-hmac-key-5b1e0d7c9a"  # the HMAC key of these runs: it must show up nowhere
DAY = date(2026, 11, 1)


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    from lakehouse.backends.sources.sample import generate

    folder = tmp_path_factory.mktemp("secrets") / "landing"
    generate(folder, days=1, scale=0.02, seed=11, start=DAY)
    return folder


@pytest.fixture
def hmac_from(monkeypatch):
    """``hmac_from(reference)``: the next runs take their HMAC key from ``reference`` (settings re-read)."""
    from lakehouse.deployments import settings

    def use(reference: str) -> None:
        monkeypatch.setenv("LAKEHOUSE_HMAC_KEY_SECRET", reference)
        settings.cached_settings.cache_clear()
        settings._secret_key.cache_clear()

    yield use
    settings.cached_settings.cache_clear()
    settings._secret_key.cache_clear()


def _email_hmacs(root: Path) -> list[tuple[str, str]]:
    rows = DeltaTable(str(root / "silver" / "customers")).to_pyarrow_table(columns=["email_hmac", "email_masked"])
    return list(zip(rows.column("email_hmac").to_pylist(), rows.column("email_masked").to_pylist(), strict=True))


def _expected_hmac(landing: Path, key: str) -> set[str]:
    """HMACs of the landing customers' normalised e-mails under ``key``, computed here independently."""
    import pyarrow.parquet as pq

    digests = set()
    for path in (landing / "snowflake" / "customers" / DAY.isoformat()).glob("*.parquet"):
        for email in pq.read_table(path, columns=["email"]).column("email").to_pylist():
            normalised = (email or "").strip().lower()
            digests.add(hmac.new(key.encode(), normalised.encode(), hashlib.sha256).hexdigest())
    return digests


def _strings_in_lake(root: Path) -> str:
    """Every value of every Delta table under ``root`` as text, plus every other file's bytes as text."""
    out = []
    tables = {p.parent for p in root.rglob("_delta_log")}
    for t in tables:
        data: pa.Table = DeltaTable(str(t)).to_pyarrow_table()
        out.append(repr(data.to_pylist()))
    for f in root.rglob("*"):
        if f.is_file():
            out.append(f.read_bytes().decode("latin-1"))
    return "\n".join(out)


def test_the_hmac_key_comes_from_a_prefect_secret_and_shows_up_nowhere(prefect_harness, landing, tmp_path, caplog,
                                                                      hmac_from):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from lakehouse.flows.daily import daily_lakehouse

    Secret(value=CANARY).save("lakehouse-hmac-canary", overwrite=True)
    hmac_from("prefect-secret:lakehouse-hmac-canary")
    caplog.set_level(logging.DEBUG)
    for name in ("prefect", "flows", "backends", "urllib3", "httpx", "deltalake"):
        caplog.set_level(logging.DEBUG, logger=name)
    root = tmp_path / "lake"
    state = daily_lakehouse(run_date=DAY, lake_root=str(root), landing_root=str(landing), return_state=True)
    assert state.is_completed(), state.message

    # The key was used: silver's e-mail HMACs are those of the canary key, not of the local development key.
    digests = {h for h, _ in _email_hmacs(root) if h}
    assert digests and digests <= _expected_hmac(landing, CANARY)
    assert not digests & _expected_hmac(landing, "local-development-key-not-secret")

    # ... and shows up nowhere: logs (captured and the API's), artifacts, parameters, ledger, lake files.
    assert "silver.customers" in caplog.text  # logs were captured
    assert CANARY not in caplog.text
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
    mine = [r for r in runs if r.parameters.get("lake_root") == str(root) or r.parent_task_run_id]
    assert mine and not [r for r in runs if CANARY in json.dumps(r.parameters, default=str)]
    assert logs and not [entry for entry in logs if CANARY in entry.message]
    assert artifacts and not [a for a in artifacts if CANARY in json.dumps(a.data, default=str)]
    ledger = read_ledger(Lake(str(root)))
    assert ledger and CANARY not in repr(ledger)
    assert CANARY not in _strings_in_lake(root)


def test_the_hmac_key_from_aws_secrets_manager(prefect_harness, landing, tmp_path, aws, hmac_from):
    import boto3

    from lakehouse.flows.daily import daily_lakehouse

    sm = boto3.client("secretsmanager", endpoint_url=aws, region_name="us-east-1")
    sm.create_secret(Name="lakehouse/hmac-test", SecretString=json.dumps({"hmac_key": CANARY + "-aws"}))
    hmac_from("aws-secretsmanager:lakehouse/hmac-test#hmac_key")
    root = tmp_path / "lake"
    daily_lakehouse(run_date=DAY, lake_root=str(root), landing_root=str(landing))
    digests = {h for h, _ in _email_hmacs(root) if h}
    assert digests and digests <= _expected_hmac(landing, CANARY + "-aws")


def test_a_missing_or_short_secret_stops_the_run_before_any_write(prefect_harness, landing, tmp_path, hmac_from):
    from prefect.blocks.system import Secret

    from lakehouse.deployments.secrets import SecretNotFoundError
    from lakehouse.flows.daily import daily_lakehouse

    hmac_from("prefect-secret:no-such-block-here")
    with pytest.raises(SecretNotFoundError, match="no-such-block-here"):
        daily_lakehouse(run_date=DAY, lake_root=str(tmp_path / "a"), landing_root=str(landing))
    Secret(value="short").save("lakehouse-hmac-short", overwrite=True)
    hmac_from("prefect-secret:lakehouse-hmac-short")
    with pytest.raises(SecretNotFoundError, match="at least 16 characters"):
        daily_lakehouse(run_date=DAY, lake_root=str(tmp_path / "b"), landing_root=str(landing))
    assert not (tmp_path / "a" / "bronze").exists() and not (tmp_path / "b" / "bronze").exists()
