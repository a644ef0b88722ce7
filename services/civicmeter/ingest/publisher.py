"""Validates batches of usage events and writes them durably to usage.raw, many events per
record (a UsageEventBatch per partition).

A batch is acknowledged to its sender only after Kafka has acknowledged every event
(acks=all, idempotent producer), so nothing accepted is ever lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from opentelemetry import trace

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import IngestSettings
from civicmeter.core.events.encodings import EncodedEvents
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.kafka import KeyCache, make_producer, send_encoded_events
from civicmeter.core.telemetry.kafka_spans import KafkaClient, inject_headers, producer_span
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.ingest.batch_validation import identity_key, validate_encoded_batch

MAX_REPORTED_ERRORS = 100
log = logging.getLogger("civicmeter.ingest")


@dataclass(frozen=True)
class EventError:
    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"events[{self.index}].{self.field}: {self.message}"


class BatchRejectedError(ValueError):
    """At least one event is invalid; none of the batch was published."""

    def __init__(self, errors: list[EventError], invalid_count: int) -> None:
        more = f" (and {invalid_count - len(errors)} more)" if invalid_count > len(errors) else ""
        super().__init__(f"{invalid_count} invalid event(s); first: {errors[0]}{more}")
        self.errors = errors
        self.invalid_count = invalid_count


class BatchTooLargeError(ValueError):
    pass


class PublishUnavailableError(RuntimeError):
    """Kafka did not acknowledge the batch in time; the caller should retry it as it is."""


def check_batch_size(events: Sequence[pb.UsageEvent], settings: IngestSettings) -> None:
    """BatchRejectedError for an empty batch, BatchTooLargeError over the limit."""
    if not events:
        raise BatchRejectedError([EventError(0, "events", "the batch is empty")], 1)
    if len(events) > settings.max_batch_events:
        raise BatchTooLargeError(
            f"{len(events)} events exceed the batch limit {settings.max_batch_events}"
        )


def check_batch(
    events: Sequence[pb.UsageEvent],
    settings: IngestSettings,
    now: datetime | None = None,
    encoded: bytes | None = None,
) -> list[bytes]:
    """Each event's identity (batch_validation.py); BatchRejectedError listing the invalid
    events (up to MAX_REPORTED_ERRORS) when any is. `encoded`: the events as a
    UsageEventBatch's encoding, when at hand (else they are encoded here)."""
    check_batch_size(events, settings)
    now_s = (now or datetime.now(UTC)).timestamp()
    window = settings.time_window
    identities, invalid = validate_encoded_batch(
        events,
        encode_event_batch(events) if encoded is None else encoded,
        now_s - window.max_age.total_seconds(),
        now_s + window.max_future.total_seconds(),
        window,
    )
    if invalid:
        errors = [
            EventError(index, invalid[index].field, invalid[index].message)
            for index in sorted(invalid)[:MAX_REPORTED_ERRORS]
        ]
        raise BatchRejectedError(errors, len(invalid))
    return identities


class Publisher:
    def __init__(self, settings: IngestSettings, telemetry: Telemetry) -> None:
        self.settings = settings
        self._topic = settings.kafka.topics.raw
        self._tracer = telemetry.tracer
        self._client = KafkaClient("civicmeter-ingest", settings.kafka.bootstrap_servers)
        self._producer = make_producer(
            settings.kafka,
            linger_ms=settings.linger_ms,
            compression=settings.compression,
            client_id="civicmeter-ingest",
        )
        self._accepted = telemetry.meter.create_counter(
            "civicmeter.ingest.events",
            unit="{event}",
            description="Events received by ingest, by outcome",
        )
        self._keys = KeyCache(identity_key)  # partition keys by identity
        self._unknown_fields = telemetry.meter.create_counter(
            "civicmeter.ingest.unknown_fields",
            unit="{event}",
            description="Events from which ingest dropped fields the schema does not define",
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def count_rejected(self, count: int, reason: str) -> None:
        self._accepted.add(count, {"outcome": "rejected", "reason": reason})

    def count_unknown_fields(self, events: int, transport: str) -> None:
        if events:
            self._unknown_fields.add(events, {"transport": transport})

    async def _send(self, events: EncodedEvents, identities: list[bytes]) -> None:
        # One UsageEventBatch record per partition: the topic's contract (proto/).
        futures = await send_encoded_events(
            self._producer,
            self._topic,
            events.events,
            self._keys.keys(identities),
            inject_headers(),
        )
        await asyncio.gather(*futures)

    async def publish(
        self, events: Sequence[pb.UsageEvent], encoded: EncodedEvents | None = None
    ) -> int:
        """Validate, then publish every event and wait for Kafka's acknowledgement of all.
        `encoded`: the events as encoded without unknown fields, when at hand (protobuf
        requests); otherwise they are encoded here."""
        try:
            check_batch_size(events, self.settings)  # before encoding what may be refused
            encoded = encoded or EncodedEvents.of_messages(events)
            identities = check_batch(events, self.settings, encoded=encoded.batch)
        except BatchRejectedError as exc:
            self.count_rejected(exc.invalid_count, "invalid")
            raise
        except BatchTooLargeError:
            self.count_rejected(len(events), "too_large")
            raise
        with trace.use_span(
            producer_span(self._tracer, self._topic, len(events), self._client), end_on_exit=True
        ):
            try:
                await asyncio.wait_for(
                    self._send(encoded, identities), self.settings.publish_timeout_seconds
                )
            except (KafkaError, TimeoutError) as exc:
                # A broker outage: no traceback per request, one clear answer to retry.
                log.warning(
                    "a batch of %d events was not acknowledged by Kafka: %r", len(events), exc
                )
                self.count_rejected(len(events), "kafka_unavailable")
                raise PublishUnavailableError("Kafka is unavailable; retry the batch") from None
        self._accepted.add(len(events), {"outcome": "accepted"})
        return len(events)
