"""Kafka order events: a consumer (confluent-kafka) that drains the topic into micro-batch files.

A run reads every partition from its position to its end (the broker's partition EOF), a micro-batch at a time;
each micro-batch becomes one landing file (the message values, one per line, verbatim), and the offsets after
it are recorded in the lake (``_extracts/kafka/order_events``) with the file. The position of a partition is the
offset recorded by the last finished extract (or the resumed one's last micro-batch): the lake, not the
consumer group, is the source of truth, so a replay is exact.

Offsets are committed to Kafka only after bronze has applied the micro-batch files (``commit_applied``, called
after the bronze commit): the consumer group's lag then tells what bronze has, for monitoring.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakehouse.backends.sources.extract import Piece, SourceError, Window
from lakehouse.contracts.landing import LandingEntity

if TYPE_CHECKING:
    from lakehouse.deployments.settings import KafkaSettings


_POLL_SECONDS = 0.2


def _offsets(cursor: str | None) -> dict[int, int]:
    return {int(p): int(o) for p, o in json.loads(cursor).items()} if cursor else {}


def _cursor(offsets: dict[int, int]) -> str:
    return json.dumps({str(p): o for p, o in sorted(offsets.items())}, sort_keys=True)


@dataclass
class KafkaSource:
    entity: LandingEntity
    settings: KafkaSettings
    windowed = False

    def describe(self) -> str:
        return f"Kafka {self.settings.bootstrap_servers} topic {self.settings.topic}"

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        s = self.settings
        return Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": s.group_id,
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": True, **s.conf})

    def _partitions(self, consumer: Any) -> list[int]:
        s = self.settings
        try:
            meta = consumer.list_topics(s.topic, timeout=s.timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - librdkafka's KafkaException, named in the message
            msg = f"could not reach Kafka at {s.bootstrap_servers} (topic {s.topic}): {exc}"
            raise SourceError(msg) from None
        topic = meta.topics.get(s.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            msg = (f"expected topic {s.topic!r} on {s.bootstrap_servers}, got "
                   f"{topic.error if topic is not None and topic.error else 'no such topic'}")
            raise SourceError(msg)
        return sorted(topic.partitions)

    def _bounds(self, consumer: Any, start: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
        """Start and end offset of each partition (start: recorded, else the earliest kept)."""
        from confluent_kafka import TopicPartition

        s = self.settings
        begin, end = {}, {}
        for p in self._partitions(consumer):
            low, high = consumer.get_watermark_offsets(TopicPartition(s.topic, p), timeout=s.timeout_seconds)
            if p in start and start[p] < low:
                msg = (f"{s.topic}[{p}]: the lake's position {start[p]} is older than the earliest offset Kafka still "
                       f"keeps ({low}): messages {start[p]}..{low - 1} were deleted by retention before bronze read them")
                raise SourceError(msg)
            begin[p], end[p] = start.get(p, low), high
        return begin, end

    def pieces(self, window: Window, cursor: str | None) -> Iterator[Piece]:
        from confluent_kafka import KafkaError, TopicPartition

        s = self.settings
        consumer = self._consumer()
        try:
            position, _ = self._bounds(consumer, _offsets(cursor))
            # Each partition is read until the broker says its end is reached (partition EOF, from the fetch's
            # high watermark); messages arriving after that wait for the next run.
            todo = set(position)
            consumer.assign([TopicPartition(s.topic, p, position[p]) for p in sorted(todo)])
            idle = 0.0
            while todo:
                # a short wait per call: consume() holds out for a full batch until its timeout
                messages = consumer.consume(num_messages=s.batch_messages, timeout=_POLL_SECONDS)
                if not messages:
                    idle += _POLL_SECONDS
                    if idle >= s.timeout_seconds:
                        msg = (f"{s.topic}: neither a message nor the end of partition(s) {sorted(todo)} within "
                               f"{s.timeout_seconds} s (at offsets {position}); is the broker up?")
                        raise SourceError(msg)
                    continue
                idle = 0.0
                lines: list[str] = []
                for m in messages:
                    p = m.partition()
                    if m.error() is not None:
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            msg = f"{s.topic}[{p}]: consumer error {m.error()}"
                            raise SourceError(msg)
                        if p in todo and m.offset() >= position[p]:
                            todo.discard(p)
                            consumer.incremental_unassign([TopicPartition(s.topic, p)])
                        continue
                    if p not in todo or m.offset() < position[p]:
                        continue
                    if m.value() is not None:  # a tombstone carries no event
                        lines.append(m.value().decode("utf-8", errors="replace"))
                    position[p] = m.offset() + 1
                if lines or not todo:
                    yield Piece(cursor=_cursor(position), lines=lines)
        finally:
            consumer.close()

    def pending(self, window: Window, cursor: str | None) -> int | None:
        consumer = self._consumer()
        try:
            begin, end = self._bounds(consumer, _offsets(cursor))
            return sum(end[p] - begin[p] for p in end)
        finally:
            consumer.close()

    def commit(self, cursor: str) -> dict[int, int]:
        """Commit the offsets of ``cursor`` for the consumer group (after bronze applied them); the offsets."""
        from confluent_kafka import TopicPartition

        offsets = _offsets(cursor)
        if offsets:
            consumer = self._consumer()
            try:
                consumer.commit(offsets=[TopicPartition(self.settings.topic, p, o) for p, o in offsets.items()],
                                asynchronous=False)
            finally:
                consumer.close()
        return offsets
