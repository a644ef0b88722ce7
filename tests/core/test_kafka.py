"""send_batched on the real broker: every record delivered once, on the partition aiokafka's
default partitioner chooses for its key, in order per key, with its headers."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from civicmeter.core.config import KafkaSettings
from civicmeter.core.kafka import make_producer, send_batched

pytestmark = pytest.mark.kafka
PARTITIONS = 6


async def test_batches_land_where_the_default_partitioner_puts_each_key(
    kafka_bootstrap: str,
) -> None:
    topic = f"send-batched-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    # A small batch size, so each partition's records need several batches.
    producer = make_producer(KafkaSettings(bootstrap_servers=kafka_bootstrap), max_batch_size=4096)
    await producer.start()
    keys = [f"org/user-{i % 37}".encode() for i in range(3000)]
    records: list[tuple[bytes | None, bytes]] = [
        (key, f"{i:06d}".encode() * 10) for i, key in enumerate(keys)
    ]
    records += [(None, b"keyless-%d" % i) for i in range(20)]
    try:
        futures = await send_batched(producer, topic, records, [("traceparent", b"00-abc")])
        assert len(futures) > PARTITIONS  # batched, and more than once per partition
        for future in futures:
            await future
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        group_id=f"g-{topic}", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while len(got) < len(records):
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, f"only {len(got)} of {len(records)} records arrived"
            for messages in batch.values():
                got += messages
    finally:
        await consumer.stop()
    assert len(got) == len(records)
    partitions = list(range(PARTITIONS))
    per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for message in got:
        assert message.headers == (("traceparent", b"00-abc"),)
        if message.key is None:
            continue
        assert message.partition == DefaultPartitioner()(message.key, partitions, partitions)
        per_key[message.key].append(message.value or b"")
    for key, values in per_key.items():
        assert values == [value for k, value in records if k == key]  # in order per key
    assert sorted(m.value or b"" for m in got if m.key is None) == sorted(
        v for k, v in records if k is None
    )
    assert len({m.partition for m in got if m.key is None}) > 1  # spread, not piled on one
