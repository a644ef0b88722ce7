"""The publisher (ingest/publisher.py): which batches it refuses and how it reports them, and,
on the real broker, how an accepted batch lands on usage.raw: a UsageEventBatch record per
partition, each user's events on the partition of their key and in the order sent."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry import metrics, trace

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import IngestSettings, KafkaSettings, TopicSettings
from civicmeter.core.kafka import event_key
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.ingest.publisher import (
    MAX_REPORTED_ERRORS,
    BatchRejectedError,
    BatchTooLargeError,
    EventError,
    Publisher,
    check_batch,
)
from tests.factories import NOW, event

PARTITIONS = 4
SETTINGS = IngestSettings(kafka=KafkaSettings(), max_batch_events=500)


def test_an_empty_batch_is_refused_naming_the_events() -> None:
    with pytest.raises(BatchRejectedError) as refused:
        check_batch([], SETTINGS, NOW)
    assert refused.value.errors == [EventError(0, "events", "the batch is empty")]
    assert str(refused.value) == "1 invalid event(s); first: events[0].events: the batch is empty"


def test_a_batch_over_the_event_limit_is_too_large() -> None:
    with pytest.raises(BatchTooLargeError, match=r"^501 events exceed the batch limit 500$"):
        check_batch([event(event_time=NOW)] * 501, SETTINGS, NOW)
    check_batch([event(event_time=NOW)] * 500, SETTINGS, NOW)


def test_invalid_events_are_listed_by_index_up_to_a_limit_and_counted_all() -> None:
    good = event(event_time=NOW)
    late = event(event_time=NOW - SETTINGS.time_window.max_age - timedelta(days=1))
    ahead = event(event_time=NOW + SETTINGS.time_window.max_future + timedelta(minutes=1))
    batch = [good, late, good, ahead] + [event(organization_id="")] * (MAX_REPORTED_ERRORS + 10)
    with pytest.raises(BatchRejectedError) as refused:
        check_batch(batch, SETTINGS, NOW)
    errors = refused.value.errors
    assert refused.value.invalid_count == MAX_REPORTED_ERRORS + 12
    assert len(errors) == MAX_REPORTED_ERRORS
    assert [e.index for e in errors[:3]] == [1, 3, 4]
    assert errors[0].field == errors[1].field == "event_time"
    assert errors[2].field == "organization_id"
    assert str(refused.value).startswith(f"{MAX_REPORTED_ERRORS + 12} invalid event(s); first: ")
    assert str(refused.value).endswith(" (and 12 more)")


async def read_all(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"g-{topic}", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while sum(len(pb.UsageEventBatch.FromString(r.value or b"").events) for r in got) < count:
            fetched = await consumer.getmany(timeout_ms=5000)
            assert fetched, f"only {len(got)} records arrived"
            for records in fetched.values():
                got += records
    finally:
        await consumer.stop()
    return got


@pytest.mark.kafka
async def test_a_batch_lands_as_one_record_per_partition_with_each_users_events_in_order(
    kafka_bootstrap: str,
) -> None:
    topic = f"publisher-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, create_topics=False, topics=TopicSettings(raw=topic)
    )
    settings = IngestSettings(kafka=kafka)
    publisher = Publisher(settings, Telemetry(trace.get_tracer("test"), metrics.get_meter("test")))
    users = [("seoul", f"u_{i:032x}") for i in range(9)] + [("busan", f"u_{1:032x}")]
    now = datetime.now(UTC)  # the publisher checks event times against the clock
    batch = [
        event(organization_id=org, user_id=user, event_time=now)
        for n in range(12)
        for org, user in users[n % 3 :] + users[: n % 3]  # users interleaved, order varying
    ]
    await publisher.start()
    try:
        assert await publisher.publish(batch) == len(batch)
    finally:
        await publisher.stop()

    records = await read_all(kafka_bootstrap, topic, len(batch))
    partitions = list(range(PARTITIONS))
    assert len(records) == len({r.partition for r in records})  # one record per partition
    per_user: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        events = pb.UsageEventBatch.FromString(record.value or b"").events
        first = events[0]
        assert record.key == event_key(first.organization_id, first.user_id)
        for sent in events:
            key = event_key(sent.organization_id, sent.user_id)
            assert record.partition == DefaultPartitioner()(key, partitions, partitions)
            per_user[(sent.organization_id, sent.user_id)].append(sent.event_id)
    for org, user in users:
        sent_ids = [e.event_id for e in batch if (e.organization_id, e.user_id) == (org, user)]
        assert per_user[(org, user)] == sent_ids  # each once, in the order sent
    assert sum(len(ids) for ids in per_user.values()) == len(batch)
