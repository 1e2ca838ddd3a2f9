"""The daily flow with entities pulled by their connectors: the same silver and gold as from files.

FX rates come from the vendor's API (the local API server) and order events from Kafka (tansu); the other
entities from landing files. The two days of the session's shared flow lake (built from files only) are run
again this way, and every silver and gold table is compared with that lake's (but for ``_source_file``, the
landing file a row came from).
"""

from __future__ import annotations

import shutil
import uuid
from datetime import date

import pytest

from lakehouse.contracts.catalog import tables
from lakehouse.contracts.landing import landing_entity
from lakehouse.deployments.settings import cached_settings
from tests.conftest import FLOW_DAYS
from tests.lakes import assert_same_rows, normalised
from tests.source_systems import ApiServer, day_rows
from tests.test_sources_http import fx_documents
from tests.test_sources_kafka import produce

DAYS = [date.fromisoformat(d) for d in FLOW_DAYS]
PULLED = ("fx.rates", "kafka.order_events")


@pytest.mark.slow
def test_daily_flow_with_connectors_builds_the_same_silver_and_gold_as_files(pristine_lake, kafka_broker,
                                                                             monkeypatch, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    from lakehouse.backends.lake import Lake
    from lakehouse.backends.sources.extract import ExtractLog
    from lakehouse.flows.daily import daily_lakehouse
    from lakehouse.tasks.ledger import read_ledger
    generated, from_files = pristine_lake["landing"], pristine_lake["root"]
    pulled_landing = tmp_path / "landing-pulled"
    shutil.copytree(generated, pulled_landing, ignore=shutil.ignore_patterns("fx", "kafka"))
    api = ApiServer("unused")
    docs = fx_documents(generated, DAYS)
    api.rates = docs
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    try:
        env = {"ENTITIES": '{"fx.rates": "connector", "kafka.order_events": "connector"}', "FIRST_FROM": min(docs),
               "FX__BASE_URL": api.url, "KAFKA__BOOTSTRAP_SERVERS": kafka_broker, "KAFKA__TOPIC": topic,
               "KAFKA__TIMEOUT_SECONDS": "10"}
        for k, v in env.items():
            monkeypatch.setenv(f"LAKEHOUSE_SOURCES__{k}", v)
        cached_settings.cache_clear()
        for day in DAYS:
            produce({"name": topic, "servers": kafka_broker}, day_rows(generated, landing_entity("kafka.order_events"),
                                                                       day)[1])
            daily_lakehouse(run_date=day, lake_root=str(tmp_path / "lake-pulled"), landing_root=str(pulled_landing))
    finally:
        api.stop()
        cached_settings.cache_clear()
    compared = 0
    for spec in tables():
        if spec.layer not in ("silver", "gold"):
            continue
        files, pulled = normalised(from_files, spec.name), normalised(tmp_path / "lake-pulled", spec.name)
        assert (files is None) == (pulled is None), spec.name
        if files is not None:  # the landing file a row came from names the connector's file: lineage, not data
            lineage = [c for c in files.columns if c == "_source_file"]
            assert_same_rows(spec.name, files.drop(lineage), pulled.drop(lineage))
            compared += 1
    assert compared >= 10
    lake = Lake(str(tmp_path / "lake-pulled"))
    for name in PULLED:
        log = ExtractLog(lake, landing_entity(name)).rows()
        assert [r["run_date"] for r in log if r["done"]] == DAYS
    ledger = read_ledger(lake)
    tasks = {r["task"] for r in ledger}
    assert {"extract-fx.rates", "extract-kafka.order_events", "acknowledge-kafka.order_events"} <= tasks
