"""Detector state kept in compacted Kafka topics, restored when a partition is assigned.

Two agents detect (app.py). The per-user one consumes usage.raw; its state (each user's day
totals and baseline, burst window, denials, and the usage.raw position last applied) goes to
`<group>-<raw>-user-state`, on the partition of the user's usage.raw partition. The
organisation-wide one consumes `<group>-<raw>-activity` (users' day totals keyed by
organisation); its state (users' totals as it knows them, departments' peer limits and
services) goes to `<group>-<raw>-organization-state`, on the partition of the organisation's
activity partition. So whichever process is assigned a partition finds that partition's
state in the same-numbered partition of the state topic, and reads it before its first batch
from it.

Why topics of our own rather than faust Tables: a Table writes its changelog one record per
`table[key] = value`, as the assignment happens, on the partition of the event being
processed; our micro-batches (take over many partitions) have no single current event, and
state must be written only once the batches' outputs are acknowledged, once per key changed
(state_flush.py: every few seconds, coalesced, before the offsets it covers are committed).
Recovery is the same idea as faust's (replay the compacted changelog partition on
assignment), in a few lines we control.

Why not rebuilt from ClickHouse: the processor does not read the store (the sink is its only
writer), and the rollups hold no burst windows, positions or alerted days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from civicmeter.core.config import KafkaSettings
from civicmeter.core.kafka import client_options, send_to_partitions
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.state import StateRecord, parse

log = logging.getLogger("civicmeter.processor.state")

# Activity updates are read within seconds; a day covers any outage the processor recovers from.
ACTIVITY_RETENTION_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class DetectionTopics:
    activity: str  # users' day totals (day_activity.py), keyed by organisation
    user_state: str  # compacted: the per-user agent's state, by usage.raw partition
    organization_state: str  # compacted: the organisation-wide agent's state

    @classmethod
    def of(cls, group_id: str, raw: str) -> DetectionTopics:
        """Named after the consumer group and its source, like faust's internal topics: two
        groups (or two stacks on one broker) never share them."""
        prefix = f"{group_id}-{raw}"
        return cls(f"{prefix}-activity", f"{prefix}-user-state", f"{prefix}-organization-state")


async def ensure_detection_topics(settings: KafkaSettings, names: DetectionTopics) -> None:
    """Create the detection topics if missing, with as many partitions as usage.raw."""
    topics = settings.topics
    compacted = {"cleanup.policy": "compact"}
    wanted = {
        names.activity: {"retention.ms": str(ACTIVITY_RETENTION_MS)},
        names.user_state: compacted,
        names.organization_state: compacted,
    }
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="civicmeter-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, topics.partitions, topics.replication_factor, topic_configs=configs)
            for name, configs in wanted.items()
            if name not in existing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another member was first
            if new:
                await admin.create_topics(new)
    finally:
        await admin.close()


class StateStore:
    """One engine's state topic: restores a partition's state before its first batch and
    writes the state a batch changed."""

    def __init__(self, settings: KafkaSettings, topic: str, engine: DetectionEngine) -> None:
        self.settings = settings
        self.topic = topic
        self.engine = engine
        self._loaded: set[int] = set()  # partitions whose state is in the engine
        self.restored = 0  # records read back

    def keep_only(self, partitions: Iterable[int]) -> None:
        """The source partitions assigned now (after a rebalance, and before each batch): a
        partition not kept may be processed elsewhere meanwhile, so its state is read again
        if it comes back."""
        self._loaded &= set(partitions)

    async def ensure_loaded(self, partitions: Iterable[int]) -> None:
        missing = sorted(set(partitions) - self._loaded)
        if missing:
            await self._restore(missing)
            self._loaded.update(missing)

    async def write(
        self,
        producer: AIOKafkaProducer,
        records: Iterable[StateRecord],
        partition_of: dict[str, int] | None = None,
    ) -> None:
        """Write records and wait for Kafka to acknowledge them. A record without a partition
        goes to `partition_of[its organisation]`."""
        placed = (
            (
                record.partition
                if record.partition is not None
                else (partition_of or {})[record.organization_id],
                record.key,
                record.value,
            )
            for record in records
        )
        futures = await send_to_partitions(producer, self.topic, placed)
        await asyncio.gather(*futures)

    async def _restore(self, partitions: list[int]) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            client_id="civicmeter-processor-restore",
            group_id=None,
            enable_auto_commit=False,
            # Not "latest": an assigned partition's position must never be reset to its end
            # while the seek to its beginning is under way.
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1_048_576,
        )
        await consumer.start()
        try:
            wanted = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(wanted)
            ends: dict[TopicPartition, Any] = await consumer.end_offsets(wanted)
            await consumer.seek_to_beginning(*wanted)
            pending = {tp for tp in wanted if ends[tp] > 0}
            count = 0
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        if message.key is not None and message.value is not None:
                            self.engine.restore(parse(message.key, message.value))
                            count += 1
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            self.restored += count
            log.info("restored %d state records of %s %s", count, self.topic, partitions)
        finally:
            await consumer.stop()
