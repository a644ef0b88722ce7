"""usage.raw's batch records from events' encodings (core/kafka.py encoded_event_records and
partition_keys): the same records, partitions and keys as the one-by-one framing
(event_batch_records), records split at the size limit with every event once and in order."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.encodings import EncodedEvents, join_events, split_events
from civicmeter.core.kafka import (
    EventKeys,
    KeyCache,
    encoded_event_records,
    event_batch_records,
    event_key,
)
from tests.factories import event

PARTITIONS = [0, 1, 2, 3, 4, 5]


def batch_of(count: int, users: int, seed: int = 3) -> list[pb.UsageEvent]:
    rng = random.Random(seed)
    orgs = ["seoul", "busan", "org.with/slash"]
    return [
        event(
            event_id=f"e-{i}",
            organization_id=orgs[u % len(orgs)],
            user_id=f"u_{u:032x}",
        )
        for i, u in enumerate(rng.randrange(users) for _ in range(count))
    ]


def by_user(pair: tuple[str, str]) -> bytes:
    return event_key(*pair)


def partition_keys(users: list[tuple[str, str]]) -> EventKeys:
    return KeyCache(by_user).keys(users)


def test_keys_and_hashes_are_those_of_the_default_partitioner() -> None:
    users = [("seoul", f"u_{i:032x}") for i in range(50)] + [("busan", f"u_{3:032x}")]
    cache = KeyCache(by_user, limit=40)
    first = cache.keys(users)
    again = cache.keys(reversed(users))  # from the cache, cleared once past its limit
    assert first.keys == [event_key(org, user) for org, user in users]
    assert again.keys == first.keys[::-1] and again.hashes == first.hashes[::-1]
    for key, hashed in zip(first.keys, first.hashes, strict=True):
        assert hashed % len(PARTITIONS) == DefaultPartitioner()(key, PARTITIONS, PARTITIONS)
    assert cache.keys([]).keys == []


def test_records_are_the_one_by_one_framings_records() -> None:
    events = batch_of(1_000, users=40)
    encoded = EncodedEvents.of_messages(events)
    keys = partition_keys([(e.organization_id, e.user_id) for e in events])
    records = encoded_event_records(encoded.events, keys, PARTITIONS)
    one_by_one = event_batch_records(zip(keys.keys, encoded.events, strict=True), PARTITIONS)
    assert sorted(records) == sorted(one_by_one)
    assert len(records) == len(PARTITIONS)  # one per partition at this size
    for partition, key, value in records:
        placed = pb.UsageEventBatch.FromString(value).events
        assert key == event_key(placed[0].organization_id, placed[0].user_id)
        for placed_event in placed:
            placed_key = event_key(placed_event.organization_id, placed_event.user_id)
            assert DefaultPartitioner()(placed_key, PARTITIONS, PARTITIONS) == partition
        ids = [e.event_id for e in placed]
        expected = [
            e.event_id
            for e, h in zip(events, keys.hashes, strict=True)
            if PARTITIONS[h % 6] == partition
        ]
        assert ids == expected  # every event of the partition once, in the order sent


def test_a_partition_over_the_record_limit_gets_several_records_in_order() -> None:
    events = batch_of(600, users=3)
    encoded = EncodedEvents.of_messages(events)
    keys = partition_keys([(e.organization_id, e.user_id) for e in events])
    limit = 4_000
    records = encoded_event_records(encoded.events, keys, PARTITIONS, limit)
    assert all(len(value) <= limit for _, _, value in records)
    by_partition: dict[int, list[str]] = {}
    for partition, key, value in records:
        placed = pb.UsageEventBatch.FromString(value).events
        assert key == event_key(placed[0].organization_id, placed[0].user_id)
        by_partition.setdefault(partition, []).extend(e.event_id for e in placed)
    assert sum(map(len, by_partition.values())) == len(events)
    assert len(records) > len(by_partition)  # split
    for partition, ids in by_partition.items():
        assert ids == [
            e.event_id
            for e, h in zip(events, keys.hashes, strict=True)
            if PARTITIONS[h % 6] == partition
        ]


def test_encodings_split_and_join_as_a_usage_event_batch() -> None:
    events = batch_of(5, users=2)
    batch = pb.UsageEventBatch(events=events).SerializeToString()
    encodings = split_events(batch)
    assert encodings == [e.SerializeToString() for e in events]
    assert join_events(encodings) == batch
    assert EncodedEvents.of_messages(events) == EncodedEvents.of_batch(batch)
    assert join_events([]) == b""
