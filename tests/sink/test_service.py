"""The sink's loop gathers a block from the real broker: what arrives within the wait of the
block's first record goes out as one write (every write costs the engine a part in the ledger
and each rollup), and a block never holds more than max_batch_records records."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from civicmeter.core.config import ClickHouseSettings, KafkaSettings, SinkSettings, TopicSettings
from civicmeter.core.kafka import client_options, ensure_topics, make_producer
from civicmeter.sink.service import gather

pytestmark = pytest.mark.kafka


async def _consumer(settings: KafkaSettings, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    await consumer.seek_to_beginning()
    return consumer


async def test_records_arriving_within_the_wait_are_one_block(kafka_bootstrap: str) -> None:
    topics = TopicSettings(rated=f"sink-gather-{uuid.uuid4().hex[:8]}.rated", partitions=1)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=topics)
    await ensure_topics(kafka)
    producer = make_producer(kafka, client_id="sink-gather-test")
    await producer.start()
    consumer = await _consumer(kafka, topics.rated)
    stop = asyncio.Event()
    try:
        # Three records 0.2 s apart, all within a 2 s wait of the first.
        async def trickle() -> None:
            for n in range(3):
                await (await producer.send(topics.rated, f"r{n}".encode(), partition=0))
                await asyncio.sleep(0.2)

        sending = asyncio.create_task(trickle())
        patient = SinkSettings(kafka, ClickHouseSettings(), max_batch_wait_ms=2000)
        block = await gather(consumer, patient, stop)
        await sending
        assert [r.value for r in block] == [b"r0", b"r1", b"r2"]

        # Three more at once: a block of at most two records takes two, the next the third.
        for n in range(3, 6):
            await (await producer.send(topics.rated, f"r{n}".encode(), partition=0))
        capped = SinkSettings(kafka, ClickHouseSettings(), max_batch_records=2)
        assert [r.value for r in await gather(consumer, capped, stop)] == [b"r3", b"r4"]
        assert [r.value for r in await gather(consumer, capped, stop)] == [b"r5"]
        # Nothing left: the call returns after one wait, empty, so the loop can check its stop.
        assert (
            await gather(
                consumer, SinkSettings(kafka, ClickHouseSettings(), max_batch_wait_ms=100), stop
            )
            == []
        )
    finally:
        await consumer.stop()
        await producer.stop()
