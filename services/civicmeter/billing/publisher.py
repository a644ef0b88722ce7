"""Billing's way into the ledger: seat charges to usage.rated, budget alerts to usage.alerts.

The sink is the one writer of usage_events and the alert tables, so billing produces what it
computes, as the processor does: charges as rated events in RatedUsageEventBatch records keyed
by organisation and user, alerts one per record keyed by dedup key. A call returns only once
Kafka has acknowledged every record (the producer is idempotent, acks=all), so a round that
returns has handed its output over for good. Producing the same output again is harmless: a
charge's event id is stable (`seat:<seat>:<YYYY-MM>`) and the sink stores an event id once; a
budget alert's dedup key is stable and the sink opens a key once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import TopicSettings
from civicmeter.core.kafka import event_key, send_batched, send_event_batches


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: TopicSettings) -> None:
        """`producer` is started and stopped by its owner (the billing service)."""
        self._producer = producer
        self._topics = topics

    async def charges(self, rated: Sequence[pb.RatedUsageEvent]) -> None:
        """Produce rated charge events to usage.rated and wait for Kafka's acknowledgement."""
        if not rated:
            return
        futures = await send_event_batches(
            self._producer,
            self._topics.rated,
            (
                (event_key(r.event.organization_id, r.event.user_id), r.SerializeToString())
                for r in rated
            ),
        )
        await asyncio.gather(*futures)

    async def alerts(self, alerts: Sequence[alert_pb2.Alert]) -> None:
        """Produce alerts to usage.alerts (one a record, keyed by dedup key) and wait for
        Kafka's acknowledgement."""
        if not alerts:
            return
        futures = await send_batched(
            self._producer,
            self._topics.alerts,
            ((a.dedup_key.encode(), a.SerializeToString()) for a in alerts),
        )
        await asyncio.gather(*futures)
