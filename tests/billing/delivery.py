"""Billing's publisher on the real broker, on topics of its own, and the sink's write of what it
produced: the way seat charges and budget alerts reach ClickHouse in the running system (tests
that seed the ledger through billing use it too)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.billing.publisher import Publisher
from civicmeter.core.config import KafkaSettings, TopicSettings
from civicmeter.core.kafka import client_options, ensure_topics, make_producer
from civicmeter.core.store.connection import Storage
from civicmeter.sink.service import decode, write_batch

PARTITIONS = 3


@dataclass
class Delivery:
    publisher: Publisher
    storage: Storage
    topics: TopicSettings
    consumer: AIOKafkaConsumer
    event_ids: list[str] = field(default_factory=list)  # of the usage.rated events, in order
    alert_keys: list[str] = field(default_factory=list)  # of the usage.alerts records

    async def drain(self) -> None:
        """Store every record produced so far as the sink does (decode, then write_batch)."""
        partitions = list(self.consumer.assignment())
        end = await self.consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while [tp for tp in partitions if await self.consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "records acknowledged by Kafka never arrived"
            fetched = await self.consumer.getmany(timeout_ms=200)
            records += [record for batch in fetched.values() for record in batch]
        for record in records:
            if record.topic == self.topics.rated:
                batch = pb.RatedUsageEventBatch.FromString(record.value or b"")
                self.event_ids += [rated.event.event_id for rated in batch.events]
            else:
                self.alert_keys.append(alert_pb2.Alert.FromString(record.value or b"").dedup_key)
        if records:
            decoded = decode(records, self.topics)
            assert decoded.dead == []
            await self.storage.run(lambda client: write_batch(client, decoded))


@contextlib.asynccontextmanager
async def delivered(kafka_bootstrap: str, storage: Storage) -> AsyncIterator[Delivery]:
    prefix = f"billing-{uuid.uuid4().hex[:8]}"
    topics = TopicSettings(
        raw=f"{prefix}.raw",
        rated=f"{prefix}.rated",
        dlq=f"{prefix}.dlq",
        alerts=f"{prefix}.alerts",
        partitions=PARTITIONS,
    )
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=topics)
    await ensure_topics(settings)
    producer = make_producer(settings, client_id="billing-test")
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await producer.start()
    await consumer.start()
    consumer.assign(
        [TopicPartition(t, p) for t in (topics.rated, topics.alerts) for p in range(PARTITIONS)]
    )
    await consumer.seek_to_beginning()
    try:
        yield Delivery(Publisher(producer, topics), storage, topics, consumer)
    finally:
        await consumer.stop()
        await producer.stop()
