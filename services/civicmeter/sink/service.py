"""The sink loop: usage.rated → ClickHouse, committing offsets only after the write.

Records that are not RatedUsageEvents go to usage.dlq with the reason; they never stop the
loop. A failed write is retried with backoff without committing, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from aiokafka.errors import CommitFailedError
from google.protobuf.message import DecodeError
from opentelemetry import trace

from civicmeter.core.config import SinkSettings
from civicmeter.core.kafka import make_consumer, make_producer
from civicmeter.core.storage import Storage, migrate
from civicmeter.core.telemetry import Telemetry, consumer_span, links_from_headers
from civicmeter.sink.writer import WriteResult, write_events
from civicmeter.usage.v1 import usage_event_pb2 as pb

log = logging.getLogger("civicmeter.sink")
MAX_BACKOFF_SECONDS = 30.0


def decode(
    records: list[ConsumerRecord[bytes, bytes]], topic: str
) -> tuple[list[pb.RatedUsageEvent], list[pb.DeadLetter]]:
    rated: list[pb.RatedUsageEvent] = []
    dead: list[pb.DeadLetter] = []
    now = datetime.now(UTC)
    for record in records:
        message = pb.RatedUsageEvent()
        try:
            message.ParseFromString(record.value or b"")
            if not message.event.event_id or not message.price_version:
                raise DecodeError("missing event or price_version")
        except DecodeError as exc:
            letter = pb.DeadLetter(
                payload=record.value or b"",
                reason_code="undecodable",
                reason=f"not a RatedUsageEvent: {exc}",
                source_topic=topic,
                source_partition=record.partition,
                source_offset=record.offset,
            )
            letter.dead_letter_time.FromDatetime(now)
            dead.append(letter)
            continue
        rated.append(message)
    return rated, dead


async def serve(
    settings: SinkSettings, storage: Storage, telemetry: Telemetry, stop: asyncio.Event
) -> None:
    topics = settings.kafka.topics
    await storage.run(migrate)
    written = telemetry.meter.create_counter(
        "civicmeter.sink.events",
        unit="{event}",
        description="Rated events handled by the sink, by outcome",
    )
    consumer = make_consumer(
        settings.kafka, topics.rated, group_id=settings.group_id, client_id="civicmeter-sink"
    )
    producer = make_producer(settings.kafka, client_id="civicmeter-sink")
    await producer.start()
    await consumer.start()
    log.info("sink consuming %s into ClickHouse", topics.rated)
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(
                timeout_ms=settings.max_batch_wait_ms, max_records=settings.max_batch_events
            )
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            rated, dead = decode(records, topics.rated)
            links = links_from_headers(r.headers for r in records)
            with trace.use_span(
                consumer_span(telemetry.tracer, topics.rated, len(records), links), end_on_exit=True
            ):
                if dead:
                    await asyncio.gather(
                        *[await producer.send(topics.dlq, d.SerializeToString()) for d in dead]
                    )
                    written.add(len(dead), {"outcome": "dead_lettered"})
                result = await _write_with_retry(storage, rated, stop)
            if result is None:
                break  # stopping before the write succeeded: leave the offsets uncommitted
            written.add(result.inserted, {"outcome": "inserted"})
            written.add(result.duplicates, {"outcome": "duplicate"})
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                # A rebalance took the partitions; the next owner re-reads and finds the rows.
                log.warning("offset commit failed after a successful write: %s", exc)
    finally:
        await consumer.stop()
        await producer.stop()


async def _write_with_retry(
    storage: Storage, rated: list[pb.RatedUsageEvent], stop: asyncio.Event
) -> WriteResult | None:
    backoff = 0.5
    while True:
        try:
            return await storage.run(lambda client: write_events(client, rated))
        except Exception as exc:  # noqa: BLE001 (any storage failure is retried, never skipped)
            log.error(
                "ClickHouse write of %d events failed, retrying in %.1fs: %s",
                len(rated),
                backoff,
                exc,
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff)
            return None
        except TimeoutError:
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
