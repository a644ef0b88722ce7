"""Per-partition consumer lag, asked of the real broker and reported by the gauge."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from civicmeter.core.config import KafkaSettings
from civicmeter.core.telemetry.consumer_lag import ConsumerLag
from tests.telemetry.memory import MemoryTelemetry

pytestmark = pytest.mark.kafka


async def test_lag_is_reported_per_partition_of_each_group(kafka_bootstrap: str) -> None:
    topic, group, idle = (f"lag-{uuid.uuid4().hex[:8]}-{n}" for n in ("t", "g", "idle"))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(topic, b"x", partition=0)
        for _ in range(3):
            await producer.send_and_wait(topic, b"x", partition=1)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:  # the group has read 2 records of partition 0 and none of partition 1
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
    finally:
        await consumer.stop()

    memory = MemoryTelemetry()
    lag = ConsumerLag(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), memory.telemetry.meter,
        {group: [topic], idle: [topic]},
    )  # fmt: skip
    assert await lag.refresh() == {
        (group, topic, 0): 3,
        (group, topic, 1): 3,
        (idle, topic, 0): 5,  # a group that never committed has everything to read
        (idle, topic, 1): 3,
    }
    # A topic the group committed but the service did not name (an internal one) counts too.
    unnamed = ConsumerLag(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        MemoryTelemetry().telemetry.meter,
        {group: []},
    )
    assert await unnamed.refresh() == {(group, topic, 0): 3}
    reported = {
        (
            p.attributes["messaging.consumer.group.name"],
            p.attributes["messaging.destination.name"],
            p.attributes["messaging.destination.partition.id"],
        ): p.value
        for p in memory.points("civicmeter.kafka.consumer.lag")
    }
    assert reported[(group, topic, "0")] == 3
    assert reported[(idle, topic, "0")] == 5
    assert len(reported) == 4


async def test_a_broker_that_does_not_answer_leaves_the_lag_unknown() -> None:
    memory = MemoryTelemetry()
    lag = ConsumerLag(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), memory.telemetry.meter, {"g": ["t"]}
    )
    lag.lag = {("g", "t", 0): 7}  # an earlier answer
    await lag.refresh_or_clear()
    assert lag.lag == {}
    assert memory.points("civicmeter.kafka.consumer.lag") == []
