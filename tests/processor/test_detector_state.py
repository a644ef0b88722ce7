"""Detector state through real compacted topics: written by one engine, read back by another
when its partition is assigned."""

from __future__ import annotations

import uuid

import pytest

from civicmeter.core.config import KafkaSettings, TopicSettings
from civicmeter.core.kafka import make_producer
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.engine import USER_DETECTORS
from civicmeter.processor.detector_state import (
    DetectionTopics,
    StateStore,
    ensure_detection_topics,
)
from tests.processor.test_durable_detection import POLICY, day_of

pytestmark = pytest.mark.kafka


@pytest.fixture
def policies() -> PolicySet:
    return parse_policies(POLICY, "test.yaml")


def engine(policies: PolicySet) -> DetectionEngine:
    return DetectionEngine(
        policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
    )


async def test_a_partition_state_is_read_back_by_its_next_owner(
    kafka_bootstrap: str, policies: PolicySet
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=TopicSettings(partitions=2))
    names = DetectionTopics.of(f"state-{uuid.uuid4().hex[:8]}", "usage.raw")
    await ensure_detection_topics(settings, names)
    await ensure_detection_topics(settings, names)  # a second member finds them there

    first = engine(policies)
    for day in range(10):  # a user on partition 1, another on partition 0
        first.process(day_of("u1", day, 20), [(0, 1, day)])
        first.process(day_of("u0", day, 20), [(0, 0, day)])
        producer = make_producer(settings)
        await producer.start()
        try:
            await StateStore(settings, names.user_state, first).write(producer, first.take_state())
        finally:
            await producer.stop()

    second = engine(policies)
    store = StateStore(settings, names.user_state, second)
    await store.ensure_loaded([1])
    assert store.restored >= 1
    await store.ensure_loaded([1])  # loaded once per assignment
    restored = store.restored

    spike_1 = second.process(day_of("u1", 10, 200), [(0, 1, 10)])
    assert [a.alert_type for a in spike_1] == ["volume_spike"]
    # Partition 0's state was not read: u0's baseline is unknown here.
    assert second.process(day_of("u0", 10, 200), [(0, 0, 10)]) == []
    # A replay of what the first owner applied counts nothing and raises nothing.
    assert second.process(day_of("u1", 9, 20), [(0, 1, 9)]) == []
    assert second.replayed == 20

    store.keep_only([0])  # a rebalance took partition 1 away and gave 0
    await store.ensure_loaded([0])
    assert store.restored > restored
