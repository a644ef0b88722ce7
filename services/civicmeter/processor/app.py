"""The faust-streaming app: usage.raw in; usage.rated, usage.alerts and usage.dlq out.

usage.raw and usage.rated records carry many events each (UsageEventBatch,
RatedUsageEventBatch), so faust's per-record costs are paid once per few hundred events.

Delivery is at-least-once: a micro-batch's events are acknowledged (and so their offsets
committed) only after everything produced from them is acknowledged by Kafka (acks=all).
faust's exactly_once mode is deliberately not used; the stores are idempotent on event_id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from opentelemetry import trace

from civicmeter.core.catalog_source import CatalogSource
from civicmeter.core.config import ProcessorSettings
from civicmeter.core.kafka import make_producer, send_batched, send_event_batches
from civicmeter.core.metrics import (
    ProcessorLatency,
    accept_time_header,
    consumed_attributes,
    first_event_time,
    process_duration,
)
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.severity import SEVERITY_NAMES
from civicmeter.core.telemetry import (
    KafkaClient,
    Telemetry,
    consumer_span,
    links_from_headers,
    producing,
)
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.pipeline import BatchProcessor, BatchResult, RawRecord

log = logging.getLogger("civicmeter.processor")


def _credentials(settings: ProcessorSettings) -> Any:
    kafka = settings.kafka
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism or "SCRAM-SHA-512",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def build_app(
    settings: ProcessorSettings,
    prices: CatalogSource,
    telemetry: Telemetry,
    detection: DetectionEngine | None = None,
    policies: PolicySource | None = None,
) -> faust.App:
    kafka = settings.kafka
    topics = kafka.topics
    brokers = ";".join(f"kafka://{b}" for b in kafka.bootstrap_servers.split(","))
    app = faust.App(
        settings.group_id,  # faust's app id is its Kafka consumer group
        broker=brokers,
        broker_credentials=_credentials(settings),
        datadir=str(settings.data_dir),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_size, 8192),
        processing_guarantee="at_least_once",
        consumer_group_instance_id=kafka.group_instance_id,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.session_timeout_ms / 3000,
    )
    raw_topic = app.topic(
        topics.raw, key_type=bytes, value_type=bytes, partitions=topics.partitions
    )
    processor = BatchProcessor(
        prices.catalog, topics.raw, settings.time_window, detection, settings.allowed_lateness
    )
    counters = _Counters(telemetry)
    tracer = telemetry.tracer
    consuming = KafkaClient(app.conf.broker_client_id, kafka.bootstrap_servers, settings.group_id)
    sending = KafkaClient("civicmeter-processor", kafka.bootstrap_servers)
    latency, processing = ProcessorLatency(telemetry.meter), process_duration(telemetry.meter)
    consumed = consumed_attributes(topics.raw, settings.group_id)

    async def rate(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        producer = make_producer(kafka, linger_ms=5, client_id="civicmeter-processor")
        await producer.start()
        try:
            # take_events (not take) keeps each record's partition, offset and headers.
            batches = cast("faust.Stream[bytes]", stream).take_events
            async for events in batches(settings.batch_size, within=settings.batch_within_seconds):
                started = time.perf_counter()
                records = [
                    RawRecord(e.message.value, e.message.partition, e.message.offset)
                    for e in events
                ]
                links = links_from_headers(e.message.headers for e in events)
                accepted = [e.message.timestamp for e in events]  # stamped by ingest's producer
                span = consumer_span(
                    tracer,
                    topics.raw,
                    len(records),
                    links,
                    consuming,
                    (r.partition for r in records),
                )
                with trace.use_span(span, end_on_exit=True):
                    result = processor.process(records)
                    # One producer span per destination, its context in its records' headers.
                    with producing(tracer, topics.rated, len(result.rated), sending) as headers:
                        futures = await send_event_batches(
                            producer,
                            topics.rated,
                            result.rated,
                            headers + accept_time_header(accepted),
                        )
                    if result.dead:
                        with producing(tracer, topics.dlq, len(result.dead), sending) as headers:
                            futures += await send_batched(
                                producer, topics.dlq, result.dead, headers
                            )
                    if result.alerts:
                        alerts = (
                            (a.dedup_key.encode(), a.SerializeToString()) for a in result.alerts
                        )
                        with producing(
                            tracer, topics.alerts, len(result.alerts), sending
                        ) as headers:
                            futures += await send_batched(producer, topics.alerts, alerts, headers)
                    # Offsets of this batch are committed only once all of it is durable.
                    await asyncio.gather(*futures)
                counters.record(result)
                latency.record(accepted, (first_event_time(r.value) for r in records), time.time())
                processing.record(time.perf_counter() - started, consumed)
                if result.dead:
                    log.warning(
                        "dead-lettered %d of %d events: %s",
                        len(result.dead),
                        result.events,
                        result.reasons,
                    )
                yield None
        finally:
            await producer.stop()

    app.agent(raw_topic, name="rate")(rate)

    if settings.prices_reload_seconds > 0:

        async def reload_prices() -> None:
            # The files are read and checked off the event loop; batches in flight keep the
            # catalog they started with, the next one takes the new catalog.
            if await asyncio.to_thread(prices.refresh):
                processor.catalog = prices.catalog

        app.timer(settings.prices_reload_seconds, name="reload_prices")(reload_prices)

        if detection is not None and policies is not None:
            app.timer(settings.prices_reload_seconds, name="reload_policies")(
                PolicyReloader(detection, policies)
            )
    return app


class PolicyReloader:
    """Puts a changed policy file in force in the detection engine, between batches.

    A bad change is logged with its file, line and reason by the source, and the last good
    policy stays in force."""

    def __init__(self, engine: DetectionEngine, source: PolicySource) -> None:
        self.engine = engine
        self.source = source

    async def __call__(self) -> bool:
        """Reread the file if it changed; True when a new policy was put in force."""
        generation = self.source.generation
        current = await asyncio.to_thread(self.source.current)
        if self.source.generation == generation:
            return False
        self.engine.replace_policies(current)
        return True


class _Counters:
    def __init__(self, telemetry: Telemetry) -> None:
        self._events = telemetry.meter.create_counter(
            "civicmeter.processor.events",
            unit="{event}",
            description="Events processed, by outcome and dead-letter reason",
        )

        self._alerts = telemetry.meter.create_counter(
            "civicmeter.alerts",
            unit="{alert}",
            description="Alert occurrences raised by the detectors, by type and severity",
        )

    def record(self, result: BatchResult) -> None:
        self._events.add(len(result.rated), {"outcome": "rated"})
        for reason, count in result.reasons.items():
            self._events.add(count, {"outcome": "dead_lettered", "reason": reason})
        for alert in result.alerts:
            self._alerts.add(
                1,
                {
                    "alert_type": alert.alert_type,
                    "severity": SEVERITY_NAMES.get(alert.severity, "unspecified"),
                },
            )
