"""The sink loop: usage.rated (many rated events per record) and usage.alerts → ClickHouse,
committing offsets only after the write.

Records that cannot be decoded or stored (ClickHouse checks usage.rated's as it parses them,
sink/rated_check.py names the reason) go to usage.dlq with the reason; they never stop the
loop.
A failed write is retried with backoff without committing, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError
from clickhouse_connect.driver.client import Client
from google.protobuf.message import DecodeError
from opentelemetry import trace

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import SinkSettings, TopicSettings
from civicmeter.core.kafka import make_consumer, make_producer
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.migrations import migrate
from civicmeter.core.telemetry.consumer_lag import ConsumerLag
from civicmeter.core.telemetry.kafka_spans import KafkaClient, consumer_span, links_from_headers
from civicmeter.core.telemetry.metrics import (
    SinkMetrics,
    accept_time_ms,
    consumed_attributes,
    process_duration,
)
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.sink import write_journal
from civicmeter.sink.alert_writer import AlertWriteResult, write_alerts
from civicmeter.sink.event_writer import WriteResult, replay_pending, write_rated_records

log = logging.getLogger("civicmeter.sink")
MAX_BACKOFF_SECONDS = 30.0
JOURNAL_PRUNE_SECONDS = 60.0
# How often the done marks of copied blocks are written (in one insert): a crash loses at most
# this long's marks, and the restart copies those blocks again, which changes nothing.
JOURNAL_FLUSH_SECONDS = 5.0


@dataclass
class Decoded:
    # usage.rated's records (RatedUsageEventBatch encodings), checked as they are written.
    rated_records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    alerts: list[alert_pb2.Alert] = field(default_factory=list)
    dead: list[pb.DeadLetter] = field(default_factory=list)

    @property
    def rated(self) -> list[bytes]:
        return [record.value or b"" for record in self.rated_records]


def decode(records: list[ConsumerRecord[bytes, bytes]], topics: TopicSettings) -> Decoded:
    """usage.rated's records and the alerts, by topic; an undecodable alert becomes a dead
    letter (rated records are checked as they are written: refused_letters)."""
    out = Decoded()
    for record in records:
        if record.topic != topics.alerts:
            out.rated_records.append(record)
            continue
        try:
            alert = alert_pb2.Alert.FromString(record.value or b"")
            if not alert.dedup_key or not alert.organization_id:
                raise DecodeError("missing dedup_key or organization_id")
            out.alerts.append(alert)
        except DecodeError as exc:
            out.dead.append(dead_letter(record, str(exc)))
    return out


def refused_letters(decoded: Decoded, result: WriteResult) -> list[pb.DeadLetter]:
    """The dead letters of the rated records the write refused."""
    return [
        dead_letter(decoded.rated_records[index], reason)
        for index, reason in sorted(result.refused.items())
    ]


def dead_letter(record: ConsumerRecord[bytes, bytes], problem: str) -> pb.DeadLetter:
    letter = pb.DeadLetter(
        payload=record.value or b"",
        reason_code="undecodable",
        reason=f"not a record of {record.topic}: {problem}",
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
    )
    letter.dead_letter_time.FromDatetime(datetime.now(UTC))
    return letter


async def gather(
    consumer: AIOKafkaConsumer, settings: SinkSettings, stop: asyncio.Event
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of one block: what arrives within max_batch_wait_ms of the block's first
    record, up to max_batch_records. Every write costs the engine a fixed ~0.1 s of CPU (a part
    in the staging table, the ledger and each rollup, and their merges) whatever its size, so
    at low and moderate rates the block waits for company rather than going out alone."""
    loop = asyncio.get_running_loop()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline: float | None = None
    while len(records) < settings.max_batch_records and not stop.is_set():
        wait = settings.max_batch_wait_ms / 1000 if deadline is None else deadline - loop.time()
        if wait <= 0:
            break
        fetched = await consumer.getmany(
            timeout_ms=max(1, int(wait * 1000)),
            max_records=settings.max_batch_records - len(records),
        )
        for batch in fetched.values():
            records += batch
        if deadline is None:
            if not records:
                break  # nothing came: the caller checks whether to stop and asks again
            deadline = loop.time() + settings.max_batch_wait_ms / 1000
    return records


def write_batch(client: Client, decoded: Decoded) -> tuple[WriteResult, AlertWriteResult]:
    events = write_rated_records(client, decoded.rated)
    alerts = write_alerts(client, decoded.alerts, time.time_ns() // 1_000_000)
    return events, alerts


async def serve(
    settings: SinkSettings, storage: Storage, telemetry: Telemetry, stop: asyncio.Event
) -> None:
    topics = settings.kafka.topics
    await storage.run(migrate)
    replayed = await storage.run(replay_pending)
    if replayed.blocks:
        log.warning(
            "completed %d journaled blocks (%d events) left by an earlier run",
            replayed.blocks,
            replayed.events,
        )
    written = telemetry.meter.create_counter(
        "civicmeter.sink.events",
        unit="{event}",
        description="Rated events and alerts handled by the sink, by outcome",
    )
    consumer = make_consumer(
        settings.kafka,
        topics.rated,
        topics.alerts,
        group_id=settings.group_id,
        client_id="civicmeter-sink",
    )
    producer = make_producer(settings.kafka, client_id="civicmeter-sink")
    sink_metrics, processing = SinkMetrics(telemetry.meter), process_duration(telemetry.meter)
    consumed = consumed_attributes(topics.rated, settings.group_id)
    client = KafkaClient("civicmeter-sink", settings.kafka.bootstrap_servers, settings.group_id)
    lag = ConsumerLag(
        settings.kafka, telemetry.meter, {settings.group_id: [topics.rated, topics.alerts]}
    )
    await producer.start()
    await consumer.start()
    log.info("sink consuming %s and %s into ClickHouse", topics.rated, topics.alerts)
    lag_export = asyncio.create_task(lag.run(stop))
    next_prune = time.monotonic()
    next_flush = time.monotonic() + JOURNAL_FLUSH_SECONDS
    try:
        while not stop.is_set():
            records = await gather(consumer, settings, stop)
            if not records:
                continue
            started = time.perf_counter()
            decoded = decode(records, topics)
            links = links_from_headers(r.headers for r in records)
            partitions = (r.partition for r in records)
            span = consumer_span(
                telemetry.tracer, topics.rated, len(records), links, client, partitions
            )
            with trace.use_span(span, end_on_exit=True):
                writing = time.perf_counter()
                result = await _write_with_retry(storage, decoded, stop)
                if result is not None:
                    dead = decoded.dead + refused_letters(decoded, result[0])
                    if dead:  # sent before the commit: a crash in between sends them again
                        await asyncio.gather(
                            *[await producer.send(topics.dlq, d.SerializeToString()) for d in dead]
                        )
                        written.add(len(dead), {"outcome": "dead_lettered"})
            if result is None:
                break  # stopping before the write succeeded: leave the offsets uncommitted
            events, alerts = result
            accepted = (accept_time_ms(r.headers) for r in records)
            seconds = time.perf_counter() - writing
            sink_metrics.stored(events.events, seconds, accepted, time.time())
            written.add(events.inserted, {"outcome": "inserted"})
            written.add(events.duplicates, {"outcome": "duplicate"})
            written.add(alerts.occurrences, {"outcome": "alert_occurrence"})
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                # A rebalance took the partitions; the next owner re-reads and finds the rows.
                log.warning("offset commit failed after a successful write: %s", exc)
            if time.monotonic() >= next_prune:
                await storage.run(write_journal.prune)  # flushes the done marks too
                next_prune = time.monotonic() + JOURNAL_PRUNE_SECONDS
            elif time.monotonic() >= next_flush:
                await storage.run(write_journal.flush_done)
                next_flush = time.monotonic() + JOURNAL_FLUSH_SECONDS
            processing.record(time.perf_counter() - started, consumed)
    finally:
        lag_export.cancel()
        await consumer.stop()
        await producer.stop()
        with contextlib.suppress(Exception):  # the marks only spare a replay at the next start
            await storage.run(write_journal.flush_done)


async def _write_with_retry(
    storage: Storage, decoded: Decoded, stop: asyncio.Event
) -> tuple[WriteResult, AlertWriteResult] | None:
    backoff = 0.5
    while True:
        try:
            return await storage.run(lambda client: write_batch(client, decoded))
        except Exception as exc:  # noqa: BLE001 (any storage failure is retried, never skipped)
            log.error(
                "ClickHouse write of %d records of events and %d alerts failed, retrying in "
                "%.1fs: %s",
                len(decoded.rated_records),
                len(decoded.alerts),
                backoff,
                exc,
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff)
            return None
        except TimeoutError:
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
