"""The faust-streaming app: usage.raw in; usage.rated, usage.alerts and usage.dlq out.

usage.raw and usage.rated records carry many events each (UsageEventBatch,
RatedUsageEventBatch), so faust's per-record costs are paid once per few hundred events.

Delivery is at-least-once: a micro-batch's records are acknowledged (and so their offsets
committed) only after everything produced from them, and the detector state counting them,
is acknowledged by Kafka (acks=all).
faust's exactly_once mode is deliberately not used; the stores are idempotent on event_id.

Detection runs in two agents so that its alerts do not depend on how many processors share
the partitions. usage.raw is keyed by organisation and user, so the `rate` agent sees all of
a user's events and runs the per-event and per-user detectors. It also publishes, every
second, the day totals of each user its batches touched (day_activity.py: absolute, so a
replay never counts twice) to an internal topic keyed by organisation; the `organize` agent
consumes it and runs the organisation- and department-wide detectors (peer_spike,
new_service_in_department) on all of an organisation's users, wherever their events were
rated. Day totals rather than the events themselves, or a faust group_by of them: one small
record per user and second instead of every event a second time, and they are all those
detectors ask. Each agent writes the state its batches changed, once per key every few
seconds (state_flush.py), after their outputs are acknowledged; their records are
acknowledged, and so their offsets committed, only once that state is. A process assigned a
partition reads that partition's state back first (detector_state.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry import trace

from civicmeter.api.severity import SEVERITY_NAMES
from civicmeter.core.config import KafkaSettings, ProcessorSettings
from civicmeter.core.kafka import (
    client_options,
    make_producer,
    send_batched,
    send_event_batches,
    send_to_partitions,
)
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.telemetry.kafka_spans import (
    KafkaClient,
    consumer_span,
    links_from_headers,
    producing,
)
from civicmeter.core.telemetry.metrics import (
    ProcessorLatency,
    accept_time_header,
    consumed_attributes,
    first_event_time,
    process_duration,
)
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.processor.alerts import to_record
from civicmeter.processor.detection import DetectionEngine, day_activity
from civicmeter.processor.detection.day_activity import DayActivity
from civicmeter.processor.detector_state import DetectionTopics, StateStore
from civicmeter.processor.pipeline import BatchProcessor, BatchResult, RawRecord
from civicmeter.processor.state_flush import StateFlush

# Detector state is written at most this long after the batches it counts (and their offsets
# committed then): a key changed by many batches meanwhile is written once (state_flush.py).
STATE_INTERVAL_SECONDS = 5.0
# Users' day totals go to the organisation-wide agent at most this long after they change: the
# delay its alerts (peer_spike, new_service_in_department) can take on top of the batch's.
ACTIVITY_INTERVAL_SECONDS = 1.0
_NO_LOCK = contextlib.nullcontext()

log = logging.getLogger("civicmeter.processor")


def broker_credentials(kafka: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """faust's form of the security options every aiokafka client of ours uses
    (core.kafka.client_options): faust builds its consumers and producers itself."""
    options = client_options(kafka)
    context = options.get("ssl_context")
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"],
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
    organization: DetectionEngine | None = None,
    *,
    state_interval: float = STATE_INTERVAL_SECONDS,
    activity_interval: float = ACTIVITY_INTERVAL_SECONDS,
) -> faust.App:
    """`detection` runs where each user's events are; with `organization` (the
    organisation-wide detectors), `detection` must report activity (activity_updates=True),
    and both engines' state is kept in Kafka, written every `state_interval` seconds (the
    day totals every `activity_interval`)."""
    kafka = settings.kafka
    topics = kafka.topics
    brokers = ";".join(f"kafka://{b}" for b in kafka.bootstrap_servers.split(","))
    app = faust.App(
        settings.group_id,  # faust's app id is its Kafka consumer group
        broker=brokers,
        broker_credentials=broker_credentials(kafka),
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
    names = DetectionTopics.of(settings.group_id, topics.raw)
    users: StateStore | None = None
    if detection is not None and organization is not None:
        users = StateStore(kafka, names.user_state, detection)

    async def rate(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        producer = make_producer(
            kafka, linger_ms=5, compression=settings.compression, client_id="civicmeter-processor"
        )
        await producer.start()
        source = cast("faust.Stream[bytes]", stream)
        flush: StateFlush | None = None
        internal: AIOKafkaProducer | None = None
        if users is not None and detection is not None:
            engine, store = detection, users
            # Day totals and state go uncompressed: small msgpack records that lz4 hardly
            # shrinks, for CPU on both sides (DETECTION_COST.md).
            internal = make_producer(
                kafka, linger_ms=5, compression=None, client_id="civicmeter-processor-state"
            )
            await internal.start()
            writer, keyed = internal, _KeyPartitions()

            async def publish_activity() -> None:
                activity = _by_organization(engine.take_activity())
                if activity:
                    placed = await keyed.place(writer, names.activity, activity)
                    with producing(tracer, names.activity, len(activity), sending) as headers:
                        futures = await send_to_partitions(writer, names.activity, placed, headers)
                    await asyncio.gather(*futures)

            async def write_state() -> None:
                await store.write(writer, engine.take_state())

            flush = StateFlush(
                write_state,
                source.ack,
                interval=state_interval,
                publish=publish_activity,
                publish_interval=activity_interval,
                pending_keys=lambda: engine.pending_state,
            )
        try:
            async with _flushing(flush, app):
                # take_events (not take) keeps each record's partition, offset and headers;
                # with durable state, noack_take: records are acknowledged (and so their
                # offsets committed) only once the state counting them is written.
                batches = source.take_events if flush is None else source.noack_take
                async for taken in batches(
                    settings.batch_size, within=settings.batch_within_seconds
                ):
                    started = time.perf_counter()
                    events: Sequence[Any] = taken  # noack_take's are events too
                    if users is not None and flush is not None:
                        events = await _assigned(app, taken, users, topics.raw, source)
                    if not events:
                        yield None
                        continue
                    async with flush.lock if flush is not None else _NO_LOCK:
                        result = await process(producer, events, flush)
                    counters.record(result)
                    latency.record(
                        [e.message.timestamp for e in events],
                        (first_event_time(e.message.value) for e in events),
                        time.time(),
                    )
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
            if internal is not None:
                await internal.stop()

    async def process(
        producer: AIOKafkaProducer, events: Sequence[Any], flush: StateFlush | None
    ) -> BatchResult:
        """Rate and detect one micro-batch and publish what it produced; with durable state,
        hand it to `flush` once all of that is acknowledged."""
        records = [
            RawRecord(e.message.value, e.message.partition, e.message.offset) for e in events
        ]
        if users is not None:
            await users.ensure_loaded(r.partition for r in records)
        links = links_from_headers(e.message.headers for e in events)
        accepted = [e.message.timestamp for e in events]  # stamped by ingest's producer
        span = consumer_span(
            tracer, topics.raw, len(records), links, consuming, (r.partition for r in records)
        )
        with trace.use_span(span, end_on_exit=True):
            result = processor.process(records)
            # One producer span per destination, its context in its records' headers.
            with producing(tracer, topics.rated, len(result.rated), sending) as headers:
                futures = await send_event_batches(
                    producer, topics.rated, result.rated, headers + accept_time_header(accepted)
                )
            if result.dead:
                with producing(tracer, topics.dlq, len(result.dead), sending) as headers:
                    futures += await send_batched(producer, topics.dlq, result.dead, headers)
            if result.alerts:
                alerts = ((a.dedup_key.encode(), a.SerializeToString()) for a in result.alerts)
                with producing(tracer, topics.alerts, len(result.alerts), sending) as headers:
                    futures += await send_batched(producer, topics.alerts, alerts, headers)
            # The state that counts this batch is written only after its outputs are durable,
            # and its offsets committed only after that state (state_flush.py).
            await asyncio.gather(*futures)
            if flush is not None:
                await flush.processed(events)
        return result

    app.agent(raw_topic, name="rate")(rate)

    if users is not None and organization is not None:
        organizations = StateStore(kafka, names.organization_state, organization)
        activity_topic = app.topic(
            names.activity, key_type=bytes, value_type=bytes, partitions=topics.partitions
        )

        async def organize(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            assert organization is not None
            engine = organization
            # Its state (and its rare alerts) uncompressed, as the day totals (rate).
            producer = make_producer(
                kafka, linger_ms=5, compression=None, client_id="civicmeter-processor-org"
            )
            await producer.start()
            source = cast("faust.Stream[bytes]", stream)
            # The activity partition of each organisation whose state is pending.
            partition_of: dict[str, int] = {}

            async def write_state() -> None:
                await organizations.write(producer, engine.take_state(), partition_of)
                partition_of.clear()

            flush = StateFlush(
                write_state,
                source.ack,
                interval=state_interval,
                pending_keys=lambda: engine.pending_state,
            )
            try:
                async with _flushing(flush, app):
                    async for taken in source.noack_take(
                        settings.batch_size, within=settings.batch_within_seconds
                    ):
                        events = await _assigned(app, taken, organizations, names.activity, source)
                        if not events:
                            yield None
                            continue
                        async with flush.lock:
                            await organizations.ensure_loaded(e.message.partition for e in events)
                            updates: list[DayActivity] = []
                            for e in events:
                                batch = day_activity.decode(e.message.value or b"")
                                if batch:  # one organisation's, by the topic's key
                                    partition_of[batch[0].organization_id] = e.message.partition
                                updates.extend(batch)
                            result = BatchResult(
                                alerts=[to_record(a) for a in engine.apply_activity(updates)]
                            )
                            if result.alerts:
                                alerts = (
                                    (a.dedup_key.encode(), a.SerializeToString())
                                    for a in result.alerts
                                )
                                with producing(
                                    tracer, topics.alerts, len(result.alerts), sending
                                ) as headers:
                                    futures = await send_batched(
                                        producer, topics.alerts, alerts, headers
                                    )
                                await asyncio.gather(*futures)
                            await flush.processed(events)
                        counters.record(result)
                        yield None
            finally:
                await producer.stop()

        app.agent(activity_topic, name="organize")(organize)

        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            # A partition no longer ours may be processed elsewhere: its state is read back
            # from its topic if it returns.
            assigned: set[Any] = args[0]
            log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
            users.keep_only(tp.partition for tp in assigned if tp.topic == topics.raw)
            organizations.keep_only(tp.partition for tp in assigned if tp.topic == names.activity)

        app.on_partitions_assigned.connect(on_assigned)

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
            if organization is not None:
                app.timer(settings.prices_reload_seconds, name="reload_org_policies")(
                    PolicyReloader(organization, policies)
                )
    return app


async def _assigned(
    app: faust.App,
    events: Sequence[Any],
    store: StateStore,
    topic: str,
    source: faust.Stream[bytes],
) -> list[Any]:
    """The events of partitions assigned here now. Records a rebalance took away, fetched
    before it, are left to the new owner: processed here too, their state would be written by
    two processes at once. They are acknowledged at once, so faust does not wait for them
    (commits of revoked partitions are discarded anyway)."""
    assignment = app.consumer.assignment()
    store.keep_only(tp.partition for tp in assignment if tp.topic == topic)
    kept = []
    for event in events:
        if event.message.tp in assignment:
            kept.append(event)
        else:
            await source.ack(event)
    return kept


@contextlib.asynccontextmanager
async def _flushing(flush: StateFlush | None, app: faust.App) -> AsyncIterator[None]:
    """Runs `flush`'s timer while an agent runs, and writes what is pending when it stops.
    The timer writes at once during a rebalance or a stop: faust's revocation and stop both
    wait, before the agents stop, until every record taken is acknowledged, then commit."""
    if flush is None:
        yield
        return
    ticker = asyncio.create_task(flush.run(lambda: bool(app.rebalancing or app.should_stop)))
    try:
        yield
    finally:
        async with flush.lock:  # never cut a flush in the middle
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if flush.pending:
                await flush.flush()


class _KeyPartitions:
    """The partition aiokafka's default partitioner picks for each key (as send_batched
    places keyed records), worked out once per key: the organisations are few, and
    core.kafka's shared cache of key hashes is churned by the events' and alerts' keys."""

    def __init__(self) -> None:
        self._partitions: list[int] = []
        self._of: dict[bytes, int] = {}
        self._partitioner = DefaultPartitioner()

    async def place(
        self, producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]
    ) -> list[tuple[int, bytes | None, bytes]]:
        partitions = sorted(await producer.partitions_for(topic))
        if partitions != self._partitions:
            self._partitions, self._of = partitions, {}
        placed: list[tuple[int, bytes | None, bytes]] = []
        for key, value in records:
            partition = self._of.get(key)
            if partition is None:
                partition = self._of[key] = self._partitioner(key, partitions, partitions)
            placed.append((partition, key, value))
        return placed


ACTIVITY_RECORD_BYTES = 256 * 1024  # well under the broker's message.max.bytes (1 MiB)


def _by_organization(
    updates: list[DayActivity], most_bytes: int = ACTIVITY_RECORD_BYTES
) -> list[tuple[bytes, bytes]]:
    """Activity records keyed by organisation (day_activity.py), each at most `most_bytes`:
    one per organisation unless its updates need more. A processor catching up on a backlog
    touches tens of thousands of users' days between two publications, which in one record
    the broker refuses; updates are absolute, so an organisation's several records, in order
    on its partition, say what one would."""
    grouped: dict[str, list[DayActivity]] = {}
    for update in updates:
        batch = grouped.get(update.organization_id)
        if batch is None:
            grouped[update.organization_id] = [update]
        else:
            batch.append(update)
    records: list[tuple[bytes, bytes]] = []
    for org, batch in grouped.items():
        key = org.encode()
        records.extend((key, value) for value in _bounded(batch, most_bytes))
    return records


def _bounded(updates: list[DayActivity], most_bytes: int) -> list[bytes]:
    """`updates` encoded in order, halved until each record is at most `most_bytes` (or one
    update)."""
    encoded = day_activity.encode(updates)
    if len(encoded) <= most_bytes or len(updates) == 1:
        return [encoded]
    half = len(updates) // 2
    return _bounded(updates[:half], most_bytes) + _bounded(updates[half:], most_bytes)


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
