"""The HTTP connectors against a local API server (tests/source_systems.py ApiServer): the HubSpot-style CRM
search API (pages, 429 with Retry-After, 503 now and then, a bearer token from a secret) and the FX vendor's
daily rates (a missing day reported, never invented)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime

import polars as pl
import pytest

from lakehouse.backends.lake import Lake
from lakehouse.backends.sources.extract import FILE_PREFIX, ExtractLog, SourceError
from lakehouse.backends.sources.http_api import CRM_OBJECTS, CRM_PROPERTIES
from lakehouse.contracts.landing import landing_entity
from lakehouse.deployments.settings import cached_settings
from tests.conftest import ROOT
from tests.source_systems import ApiServer, TwoPaths, day_rows, write_landing

DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
TOKEN = "pat-test-0123456789"


@pytest.fixture
def generated(source_landing):
    return source_landing


@pytest.fixture
def api(prefect_harness, monkeypatch):
    """The API server, and settings pointing the CRM and FX connectors at it (token in a Secret block)."""
    from prefect.blocks.system import Secret

    Secret(value=TOKEN).save("crm-test-token", overwrite=True)
    server = ApiServer(TOKEN)
    for k, v in {"CRM__BASE_URL": server.url, "CRM__TOKEN_SECRET": "prefect-secret:crm-test-token",
                 "CRM__PAGE_SIZE": "10", "CRM__BACKOFF_SECONDS": "0.01", "CRM__MAX_WAIT_SECONDS": "2",
                 "FX__BASE_URL": server.url, "FX__BACKOFF_SECONDS": "0.01", "FX__MAX_WAIT_SECONDS": "2",
                 "FILE_ROWS": "25"}.items():
        monkeypatch.setenv(f"LAKEHOUSE_SOURCES__{k}", v)
    cached_settings.cache_clear()
    yield server
    server.stop()
    cached_settings.cache_clear()


def _hubspot_time(text: str) -> str | None:
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def crm_records(frame: pl.DataFrame, name: str, first_id: int) -> tuple[pl.DataFrame, list[dict]]:
    """The rows of ``frame`` a CRM can hold (a last-modified time that parses) and them as CRM records: ids,
    properties as strings, times with milliseconds, dates as midnight timestamps (as HubSpot sends them)."""
    entity = landing_entity(name)
    props = CRM_PROPERTIES[name]
    kept = frame.filter(pl.col("updated_at").map_elements(_hubspot_time, return_dtype=pl.String).is_not_null())
    records = []
    for i, row in enumerate(kept.to_dicts()):
        properties = {}
        for c in entity.columns:
            value = row[c.name]
            if c.type == "timestamp" and value is not None:
                value = _hubspot_time(value) or value
            elif c.type == "date" and value is not None and len(value) == 10:
                value = f"{value}T00:00:00.000Z"
            properties[props[c.name]] = value
        records.append({"id": str(first_id + i), "properties": properties})
    return kept, records


@pytest.mark.parametrize("name", sorted(CRM_OBJECTS))
def test_crm_connector_lands_the_file_paths_bronze_rows_through_throttling_and_failures(name, generated, api,
                                                                                         tmp_path, monkeypatch):
    entity = landing_entity(name)
    monkeypatch.setenv("LAKEHOUSE_SOURCES__CRM__PAGE_SIZE", "5")
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", "5")  # a file per page
    cached_settings.cache_clear()
    api.throttle_every, api.fail_every, api.retry_after = 3, 5, "0"
    paths = TwoPaths(tmp_path)
    records: list[dict] = []
    pulled = []
    for day in DAYS:
        kept, new = crm_records(day_rows(generated, entity, day)[0], name, len(records))
        records += new
        api.records[CRM_OBJECTS[name]] = records
        write_landing(paths.landing("files"), entity, day, kept)
        paths.run_files(name, day)
        pulled.append(paths.run_connector(name, day)[0])
    connector = paths.bronze("connector", entity)
    assert connector.height > 20  # more than two pages
    assert connector.equals(paths.bronze("files", entity))
    statuses = Counter(status for _, _, status in api.requests)
    assert statuses[429] > 0 and statuses[503] > 0  # both were met, and retried
    assert pulled[0]["files"] >= 2 and pulled[2]["dropped_known"] > 0


def test_crm_waits_what_retry_after_asks(generated, api, tmp_path):
    name = "crm.accounts"
    entity = landing_entity(name)
    api.records["companies"] = crm_records(day_rows(generated, entity, DAYS[0])[0], name, 0)[1]
    api.throttle_every, api.retry_after = 3, "1"
    stamps = api.answered_at
    paths = TwoPaths(tmp_path)
    paths.extract(name, DAYS[0])
    throttled = [i for i, (_, _, status) in enumerate(api.requests) if status == 429]
    assert throttled
    for i in throttled:
        if i + 1 < len(stamps):
            assert stamps[i + 1] - stamps[i] >= 0.9  # the next request came after the second asked for


def test_crm_refuses_a_wrong_token_at_once_with_the_servers_answer(generated, api, tmp_path):
    from prefect.blocks.system import Secret

    Secret(value="pat-wrong").save("crm-test-token", overwrite=True)
    with pytest.raises(SourceError, match="expected HTTP 200 from POST .*companies/search, got 401: .*credentials"):
        TwoPaths(tmp_path).extract("crm.accounts", DAYS[0])
    assert [s for _, _, s in api.requests] == [401]  # not retried


def _killed_midway(api: ApiServer, paths: TwoPaths, name: str, day: date) -> None:
    """Run ``lakehouse sources extract`` in a child process, kill it (SIGKILL) while the server holds its third
    request, then let the server go on."""
    from prefect.settings import PREFECT_API_URL

    api.hold_request = 3  # two answers landed and recorded by then
    cmd = [sys.executable, "-m", "lakehouse.flows.cli", "sources", "extract", name, "--date", day.isoformat(),
           "--lake-root", str(paths.lake("connector")), "--landing", str(paths.landing("connector"))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert api.held.wait(120), proc.stdout.read().decode()[-3000:] if proc.poll() is not None else "no request"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    api.hold_request = None
    api.release.set()
    cached_settings.cache_clear()


@pytest.mark.parametrize("landing", ["folder", "s3"])
def test_a_killed_crm_extract_resumes_without_duplicates_or_gaps(landing, generated, api, tmp_path, monkeypatch,
                                                                 request):
    """Into a local landing folder, or an ``s3://`` landing root (moto), where the files it recorded outlive
    the process that wrote them."""
    name = "crm.contacts"
    entity = landing_entity(name)
    kept, records = crm_records(day_rows(generated, entity, DAYS[0])[0], name, 0)
    api.records["contacts"] = records
    assert len(records) > 40
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", "10")  # one page per file
    connector_landing = None
    if landing == "s3":
        import boto3

        request.getfixturevalue("aws")
        monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
        boto3.client("s3").create_bucket(Bucket="connector-landing")
        connector_landing = "s3://connector-landing/landing"
    paths = TwoPaths(tmp_path, connector_landing=connector_landing)
    _killed_midway(api, paths, name, DAYS[0])
    log = ExtractLog(Lake(str(paths.lake("connector"))), entity)
    assert [r["seq"] for r in log.rows()] == [1, 2] and not any(r["done"] for r in log.rows())
    pulled = paths.extract(name, DAYS[0])
    assert pulled["resumed"]
    folder = paths.landing("connector") / entity.source / entity.entity / DAYS[0].isoformat()
    files = sorted(folder.glob(f"{FILE_PREFIX}*"))
    assert len(files) >= 4 and all(str(f).startswith("s3://") == (landing == "s3") for f in files)
    landed = pl.concat([pl.read_csv(f.read_bytes(), infer_schema=False) for f in files])
    cols = entity.column_names
    assert landed.sort(cols, nulls_last=True).equals(kept.sort(cols, nulls_last=True))


# ------------------------------------------------------------------------------------------------ FX
def fx_documents(generated, days: list[date]) -> dict[str, dict]:
    """The vendor's document per rate date, from every generated FX line of ``days`` that parses."""
    entity = landing_entity("fx.rates")
    docs: dict[str, dict] = {}
    for day in days:
        frame, _ = day_rows(generated, entity, day)
        for r in frame.to_dicts():
            doc = docs.setdefault(r["rate_date"], {"base": r["base_currency"], "date": r["rate_date"],
                                                   "published_at": r["published_at"], "rates": {}})
            doc["rates"][r["quote_currency"]] = r["rate"]
    return docs


def test_fx_connector_lands_the_file_paths_rows_and_reports_a_missing_day(generated, api, tmp_path, monkeypatch):
    entity = landing_entity("fx.rates")
    docs = fx_documents(generated, DAYS)
    first = min(docs)
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FIRST_FROM", first)
    cached_settings.cache_clear()
    api.fail_every = 5
    paths = TwoPaths(tmp_path)
    missing = "2026-11-02"  # a Monday the vendor has not published yet on the day
    assert date.fromisoformat(missing).weekday() == 0 and missing in docs
    api.rates = {d: doc for d, doc in docs.items() if d != missing}
    for day in DAYS:
        frame, _ = day_rows(generated, entity, day)
        write_landing(paths.landing("files"), entity, day, frame)
        paths.run_files(entity.name, day)
    pulled = [paths.run_connector(entity.name, DAYS[0])[0], paths.run_connector(entity.name, DAYS[1])[0]]
    assert "no rates for 2026-11-02 (a business day)" in pulled[1]["notes"]
    assert "no rates for 2026-11-01 (not a business day)" in pulled[0]["notes"]
    bronze = paths.bronze("connector", entity)
    assert bronze.filter(pl.col("rate_date") == missing).height == 0  # nothing invented for it
    api.rates[missing] = docs[missing]  # published late: the next day's lookback fetches it
    pulled.append(paths.run_connector(entity.name, DAYS[2])[0])
    connector = paths.bronze("connector", entity)
    files = paths.bronze("files", entity)
    key = ["rate_date", "quote_currency", "rate", "published_at", "base_currency", "_record_hash"]
    assert connector.select(key).sort(key).equals(files.select(key).sort(key))  # every rate once
    got_late = connector.filter(pl.col("rate_date") == missing)
    assert got_late.height == len(docs[missing]["rates"]) and set(got_late["_ingest_date"]) == {DAYS[2]}
    assert Counter(s for _, _, s in api.requests)[503] > 0


def test_a_killed_fx_extract_resumes_without_duplicates_or_gaps(generated, api, tmp_path, monkeypatch):
    entity = landing_entity("fx.rates")
    docs = fx_documents(generated, DAYS)
    api.rates = docs
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FIRST_FROM", min(docs))
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", "1")  # one day per file
    paths = TwoPaths(tmp_path)
    _killed_midway(api, paths, entity.name, DAYS[0])
    log = ExtractLog(Lake(str(paths.lake("connector"))), entity)
    assert len(log.rows()) == 2 and not any(r["done"] for r in log.rows())
    assert paths.extract(entity.name, DAYS[0])["resumed"]
    folder = paths.landing("connector") / entity.source / entity.entity / DAYS[0].isoformat()
    landed = [json.loads(line) for f in sorted(folder.glob(f"{FILE_PREFIX}*")) for line in f.read_text().splitlines()]
    expected = [{"rate_date": d, "base_currency": doc["base"], "quote_currency": q, "rate": r,
                 "published_at": doc["published_at"]}
                for d, doc in docs.items() if d <= DAYS[0].isoformat() for q, r in doc["rates"].items()]
    key = lambda r: (r["rate_date"], r["quote_currency"])
    assert sorted(landed, key=key) == sorted(expected, key=key)  # every rate once: no duplicate, no gap


def test_sources_check_counts_crm_records_and_fx_days(generated, api, tmp_path, monkeypatch):
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.sources_cli import check_sources

    kept, records = crm_records(day_rows(generated, landing_entity("crm.opportunities"),
                                        DAYS[0])[0], "crm.opportunities", 0)
    in_window = kept.filter(pl.col("updated_at") >= "2025-06-01").height
    assert 0 < in_window < len(records)
    api.records["deals"] = records
    api.rates = {"2026-11-02": {"base": "USD", "date": "2026-11-02", "published_at": "x", "rates": {}}}
    monkeypatch.setenv("LAKEHOUSE_SOURCES__ENTITIES", '{"crm.opportunities": "connector", "fx.rates": "connector", '
                       '"crm.accounts": "connector"}')
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FIRST_FROM", "2025-06-01")
    settings = load_settings("local", lake_root=str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))
    rows = {r["entity"]: r for r in check_sources(settings, DAYS[0])}
    assert rows["crm.opportunities"]["ok"] and rows["crm.opportunities"]["would_fetch"] == f"{in_window} record(s)"
    assert rows["crm.accounts"]["would_fetch"] == "0 record(s)"
    days = (DAYS[0] - date(2025, 6, 1)).days + 1
    assert rows["fx.rates"]["would_fetch"] == f"{days} day(s)"  # the days 2025-06-01 .. 2026-11-01
    assert rows["fx.rates"]["window"] == "[2025-06-01T00:00:00+00:00, 2026-11-02T00:00:00+00:00)"


def test_fx_rates_keep_the_digits_the_vendor_sent(api):
    from lakehouse.backends.sources.extract import Window
    from lakehouse.backends.sources.http_api import FxSource
    from lakehouse.deployments.settings import load_settings

    # a vendor that sends rates as JSON numbers: the digits are kept as sent, trailing zeros included
    api.rates = {"2026-11-02": '{"base": "USD", "date": "2026-11-02", "published_at": "2026-11-02T16:00:00Z", '
                               '"rates": {"EUR": 0.914300, "JPY": "148.748410"}}'}
    source = FxSource(landing_entity("fx.rates"), load_settings("local").sources.fx.require())
    window = Window(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    rows = [r for p in source.pieces(window, None) if p.rows is not None for r in p.rows.to_pylist()]
    assert {r["quote_currency"]: r["rate"] for r in rows} == {"EUR": "0.914300", "JPY": "148.748410"}
