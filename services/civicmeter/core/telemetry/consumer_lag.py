"""civicmeter.kafka.consumer.lag: per-partition lag of the consumer groups a service owns.

Kafka does not push lag; a service asks every LAG_REFRESH_SECONDS: the group's committed
offsets (admin API) against the partitions' end offsets, and an observable gauge reports the
last answer: the partitions of the topics a service names for the group, and any other the
group has committed (a processor's internal topics). A partition the group never committed
counts from its first offset (the groups start at the earliest record). Every replica of a
service reports its whole group, so dashboards aggregate with max, not sum. When Kafka
cannot be asked, the gauge reports nothing rather than a stale figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaError
from opentelemetry import metrics

from civicmeter.core.config import KafkaSettings
from civicmeter.core.kafka import client_options

log = logging.getLogger("civicmeter.kafka")
LAG_REFRESH_SECONDS = 15.0
# (group, topic, partition) -> records not yet committed
Lag = dict[tuple[str, str, int], int]


class ConsumerLag:
    """Lag of `groups` (group id -> the topics it consumes), reported by an observable gauge."""

    def __init__(
        self, settings: KafkaSettings, meter: metrics.Meter, groups: Mapping[str, Sequence[str]]
    ) -> None:
        self._settings = settings
        self._groups = {group: tuple(topics) for group, topics in groups.items()}
        self.lag: Lag = {}
        meter.create_observable_gauge(
            "civicmeter.kafka.consumer.lag",
            callbacks=[self._observe],
            unit="{message}",
            description="Records of a partition not yet committed by a consumer group",
        )

    def _observe(self, _: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(
                lag,
                {
                    "messaging.consumer.group.name": group,
                    "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                },
            )
            for (group, topic, partition), lag in self.lag.items()
        ]

    async def refresh(self) -> Lag:
        """Ask Kafka for the lag of every partition of the groups' topics; keep and return it."""
        options = client_options(self._settings)
        admin = AIOKafkaAdminClient(**options, client_id="civicmeter-lag")
        try:
            await admin.start()
            offsets = AIOKafkaConsumer(
                **options, client_id="civicmeter-lag", isolation_level="read_committed"
            )
            try:
                await offsets.start()
                lag: Lag = {}
                for group, topics in self._groups.items():
                    lag.update(await _group_lag(admin, offsets, group, topics))
            finally:
                await offsets.stop()
        finally:
            await admin.close()
        self.lag = lag
        return lag

    async def refresh_or_clear(self) -> None:
        """refresh(), or report nothing (and say why) when Kafka cannot answer."""
        try:
            await self.refresh()
        except (KafkaError, OSError) as exc:
            self.lag = {}
            log.warning("consumer lag unknown: Kafka did not answer: %r", exc)

    async def run(self, stop: asyncio.Event, interval: float = LAG_REFRESH_SECONDS) -> None:
        """Refresh every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            await self.refresh_or_clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


async def _group_lag(
    admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer, group: str, topics: Sequence[str]
) -> Lag:
    """Lag of every partition of `topics` and of every other partition the group committed
    (a processor's internal topics, whatever their names)."""
    try:
        committed = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        committed = {}  # the group has not formed yet: nothing is committed
    described = await admin.describe_topics(list(topics))
    partitions = {
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if not topic.get("error_code")
        for partition in topic["partitions"]
    } | set(committed)
    if not partitions:
        return {}
    ordered = sorted(partitions)
    ends = await offsets.end_offsets(ordered)
    starts = await offsets.beginning_offsets(ordered)
    lag: Lag = {}
    for tp in ordered:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag[(group, tp.topic, tp.partition)] = max(ends[tp] - position, 0)
    return lag
