"""The billing service: periodic jobs over the stored ledger, in the storage process.

Jobs read ClickHouse (rollups, seats, opened alerts) and keep their own bookkeeping there
(seat_assignments, seat_charges); what they produce for the ledger, seat charges and budget
alerts, goes to Kafka, for the sink to store. Each job is an object with `async run(stop)`;
they run side by side until `stop` is set. A job's failure is logged and retried on its next
round by the job itself, never taking the others down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from civicmeter.billing.budget_monitor import BudgetMonitor
from civicmeter.billing.publisher import Publisher
from civicmeter.billing.seat_ledger import SeatLedger
from civicmeter.core.config import BillingSettings
from civicmeter.core.kafka import ensure_topics, make_producer
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.migrations import migrate
from civicmeter.core.telemetry.setup import Telemetry

log = logging.getLogger("civicmeter.billing")


class Job(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def jobs(
    settings: BillingSettings, storage: Storage, publisher: Publisher, telemetry: Telemetry
) -> list[Job]:
    """The billing jobs this configuration asks for."""
    found: list[Job] = []
    if settings.seats_file is not None:
        found.append(SeatLedger.from_settings(settings, storage, publisher, telemetry))
    found.append(BudgetMonitor.from_settings(settings, storage, publisher, telemetry))
    return found


async def serve(
    settings: BillingSettings, storage: Storage, telemetry: Telemetry, stop: asyncio.Event
) -> None:
    await storage.run(migrate)
    producer = make_producer(settings.kafka, client_id="civicmeter-billing")
    # Bad seat or price files stop the service before it reaches for Kafka.
    running = jobs(settings, storage, Publisher(producer, settings.kafka.topics), telemetry)
    if settings.kafka.create_topics:
        await ensure_topics(settings.kafka)
    await producer.start()
    try:
        log.info("billing running %d job(s)", len(running))
        await asyncio.gather(*(job.run(stop) for job in running))
    finally:
        await producer.stop()
