"""The Kafka consumer against a real Kafka-compatible broker (tansu) on loopback: it lands exactly the bronze rows
and quarantine the micro-batch file path lands, records offsets in the lake (the lake, not the consumer group,
says where the next run starts), commits offsets to Kafka only after bronze applied them, and resumes a killed
run with no duplicates and no gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date

import polars as pl
import pytest

from lakehouse.backends.lake import Lake
from lakehouse.backends.sources.extract import FILE_PREFIX, ExtractLog
from lakehouse.contracts.landing import landing_entity
from lakehouse.deployments.settings import cached_settings
from tests.conftest import ROOT
from tests.source_systems import TwoPaths, day_rows, write_landing

DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
NAME = "kafka.order_events"
ENTITY = landing_entity(NAME)


@pytest.fixture
def generated(source_landing):
    return source_landing


@pytest.fixture
def topic(prefect_harness, kafka_broker, monkeypatch):
    """A new two-partition topic on the broker, and the settings pointing the consumer at it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"orders-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    for k, v in {"BOOTSTRAP_SERVERS": kafka_broker, "TOPIC": name, "GROUP_ID": f"bronze-{name}",
                 "TIMEOUT_SECONDS": "10", "BATCH_MESSAGES": "200"}.items():
        monkeypatch.setenv(f"LAKEHOUSE_SOURCES__KAFKA__{k}", v)
    cached_settings.cache_clear()
    yield {"name": name, "servers": kafka_broker}
    cached_settings.cache_clear()


def produce(topic: dict, lines: list[str]) -> None:
    """Each line as one message, keyed by its order (a malformed line has no key), delivered before return."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": topic["servers"], "linger.ms": 5})
    for line in lines:
        try:
            key = json.loads(line).get("order_id")
        except (ValueError, AttributeError):
            key = None
        producer.produce(topic["name"], value=line.encode(), key=key.encode() if isinstance(key, str) else None)
    assert producer.flush(30) == 0


def committed(topic: dict) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    s = dict(os.environ)
    consumer = Consumer({"bootstrap.servers": topic["servers"], "group.id": s["LAKEHOUSE_SOURCES__KAFKA__GROUP_ID"]})
    try:
        parts = consumer.committed([TopicPartition(topic["name"], p) for p in (0, 1)], timeout=10)
        return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}
    finally:
        consumer.close()


def test_consumer_lands_the_file_paths_bronze_and_commits_only_after_bronze(generated, topic, tmp_path):
    from lakehouse.tasks.extract import acknowledge_stream

    paths = TwoPaths(tmp_path)
    total = 0
    for day in DAYS:
        _, lines = day_rows(generated, ENTITY, day)
        total += len(lines)
        produce(topic, lines)
        write_landing(paths.landing("files"), ENTITY, day, lines=lines)
        paths.run_files(NAME, day)
        pulled = paths.extract(NAME, day)
        assert pulled["rows_written"] == len(lines)
        before = committed(topic)
        from lakehouse.tasks.bronze import ingest_entity

        ingest_entity.fn(paths.ctx("connector", day), NAME)
        assert committed(topic) == before  # bronze alone commits nothing to Kafka
        acked = acknowledge_stream.fn(paths.ctx("connector", day), NAME)
        log = ExtractLog(Lake(str(paths.lake("connector"))), ENTITY).rows()
        recorded = {int(p): o for p, o in json.loads(log[-1]["cursor"]).items()}
        assert committed(topic) == recorded == {int(p): o for p, o in acked["offsets"].items()}
        assert sum(recorded.values()) == total  # every message of the topic so far
    assert paths.bronze("connector", ENTITY).equals(paths.bronze("files", ENTITY))
    quarantined = paths.quarantined("connector", ENTITY)
    assert quarantined and quarantined == paths.quarantined("files", ENTITY)  # malformed lines, quarantined alike


def test_the_lake_not_the_consumer_group_says_where_the_next_run_starts(generated, topic, tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    paths = TwoPaths(tmp_path)
    first, _ = DAYS
    lines = day_rows(generated, ENTITY, first)[1]
    produce(topic, lines)
    paths.run_connector(NAME, first)
    # someone rewinds the consumer group to the start: the next run must not land day 1 again
    consumer = Consumer({"bootstrap.servers": topic["servers"], "group.id": os.environ["LAKEHOUSE_SOURCES__KAFKA__GROUP_ID"]})
    consumer.commit(offsets=[TopicPartition(topic["name"], p, 0) for p in (0, 1)], asynchronous=False)
    consumer.close()
    more = day_rows(generated, ENTITY, DAYS[1])[1]
    produce(topic, more)
    pulled, _ = paths.run_connector(NAME, DAYS[1])
    assert pulled["rows_written"] == len(more)
    bronze = paths.bronze("connector", ENTITY)
    assert bronze.height + len(paths.quarantined("connector", ENTITY)) == len(lines) + len(more)


def test_a_killed_consumer_resumes_without_duplicates_or_gaps(generated, topic, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    day = DAYS[0]
    lines = day_rows(generated, ENTITY, day)[1]
    produce(topic, lines)
    monkeypatch.setenv("LAKEHOUSE_SOURCES__KAFKA__BATCH_MESSAGES", "5")
    monkeypatch.setenv("LAKEHOUSE_SOURCES__FILE_ROWS", "5")
    cached_settings.cache_clear()
    paths = TwoPaths(tmp_path)
    log = ExtractLog(Lake(str(paths.lake("connector"))), ENTITY)
    cmd = [sys.executable, "-m", "lakehouse.flows.cli", "sources", "extract", NAME, "--date", day.isoformat(),
           "--lake-root", str(paths.lake("connector")), "--landing", str(paths.landing("connector"))]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(log.rows()) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the consumer recorded no micro-batch in 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not any(r["done"] for r in log.rows()), "the extract finished before it was killed"
    pulled = paths.extract(NAME, day)
    assert pulled["resumed"]
    folder = paths.landing("connector") / ENTITY.source / ENTITY.entity / day.isoformat()
    landed = [line for f in sorted(folder.glob(f"{FILE_PREFIX}*")) for line in f.read_text().splitlines()]
    assert sorted(landed) == sorted(lines)  # each message once: no duplicate, no gap
    assert pl.Series(landed).len() == len(lines)


def test_sources_check_reaches_the_broker_or_says_it_cannot(topic, tmp_path, monkeypatch):
    from lakehouse.deployments.settings import load_settings
    from lakehouse.flows.sources_cli import check_sources
    from tests.conftest import _free_port

    monkeypatch.setenv("LAKEHOUSE_SOURCES__ENTITIES", '{"kafka.order_events": "connector"}')
    settings = load_settings("local", lake_root=str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))
    row = next(r for r in check_sources(settings, DAYS[0]) if r["entity"] == NAME)
    assert row["ok"] and topic["name"] in row["from"] and row["would_fetch"].endswith("message(s)")
    monkeypatch.setenv("LAKEHOUSE_SOURCES__KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{_free_port()}")  # nothing there
    monkeypatch.setenv("LAKEHOUSE_SOURCES__KAFKA__TIMEOUT_SECONDS", "2")
    settings = load_settings("local", lake_root=str(tmp_path / "lake"), landing_root=str(tmp_path / "landing"))
    row = next(r for r in check_sources(settings, DAYS[0]) if r["entity"] == NAME)
    assert not row["ok"] and "could not reach Kafka" in row["error"]
