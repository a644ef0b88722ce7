"""The processor's work on one micro-batch, free of Kafka: decode, validate, rate, detect.

A usage.raw record is a UsageEventBatch (many events of one partition, in order). Each event
is handled on its own: whatever cannot be accepted becomes a DeadLetter carrying that event's
bytes and the reason, so nothing is lost silently; a bad event never stops the batch, and an
undecodable record is dead-lettered whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.alert.v1 import alert_pb2
from civicmeter.core.kafka import event_key
from civicmeter.core.pricing import PriceCatalog, Rating, UnpricedError
from civicmeter.core.validation import TimeWindow, ValidationError, validate_event_at
from civicmeter.core.wire import length_delimited, tag, varint_field
from civicmeter.processor.alerts import to_record
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.engine import SourceMark
from civicmeter.usage.v1 import usage_event_pb2 as pb

# Keys of RatedUsageEvent's fields, all length-delimited.
_EVENT, _COST, _PRICE_VERSION, _RATED_TIME = (tag(number) for number in (1, 2, 3, 4))
_LATE = varint_field(5, 1)  # RatedUsageEvent.late = true
_DENIED = Rating(Decimal(0), "denied")  # a denied request: nothing was sent, no price rated it


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None  # a UsageEventBatch
    partition: int
    offset: int


@dataclass
class BatchResult:
    # (key, RatedUsageEvent) per accepted event, in order; the app sends them as batch records.
    rated: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, DeadLetter)
    alerts: list[alert_pb2.Alert] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by reason code
    events: int = 0  # events decoded from the records


class BatchProcessor:
    def __init__(
        self,
        catalog: PriceCatalog,
        source_topic: str,
        time_window: TimeWindow = TimeWindow(),
        detection: DetectionEngine | None = None,
        allowed_lateness: timedelta = timedelta(hours=1),
    ) -> None:
        self.catalog = catalog
        self.source_topic = source_topic
        self.time_window = time_window
        self.detection = detection
        self.allowed_lateness = allowed_lateness

    def process(self, records: Sequence[RawRecord], now: datetime | None = None) -> BatchResult:
        now = now or datetime.now(UTC)
        result = BatchResult()
        rated_time = Timestamp()
        rated_time.FromDatetime(now)
        rated_time_field = length_delimited(_RATED_TIME, rated_time.SerializeToString())
        version_fields: dict[str, bytes] = {}
        earliest = now.timestamp() - self.time_window.max_age.total_seconds()
        latest = now.timestamp() + self.time_window.max_future.total_seconds()
        # Events whose minute ended before this are late: minute start < late_before.
        late_before = now.timestamp() - self.allowed_lateness.total_seconds() - 60
        rate = self.catalog.rate
        accepted: list[tuple[pb.UsageEvent, Decimal]] = []
        sources: list[SourceMark] = []  # where each record's events start in `accepted`
        for record in records:
            try:
                if record.value is None:
                    raise DecodeError("the record has no value")
                events = pb.UsageEventBatch.FromString(record.value).events
            except DecodeError as exc:
                self._dead(
                    result, record, record.value or b"", None, "undecodable",
                    f"not a UsageEventBatch: {exc}", now,
                )  # fmt: skip
                continue
            result.events += len(events)
            sources.append((len(accepted), record.partition, record.offset))
            for event in events:
                # No byte the schema does not define goes on (prompt text could hide there).
                event.DiscardUnknownFields()
                raw = event.SerializeToString()
                key = event_key(event.organization_id, event.user_id)
                try:
                    validate_event_at(event, earliest, latest, self.time_window)
                    # A denied request never left: stored at cost 0, rated by no price.
                    rating = _DENIED if event.decision == pb.DECISION_DENY else rate(event)
                except ValidationError as exc:
                    self._dead(result, record, raw, key, "invalid_field", str(exc), now)
                    continue
                except UnpricedError as exc:
                    self._dead(result, record, raw, key, "unpriced", str(exc), now)
                    # Still a request that happened: DeepSeek is unpriced because it is banned,
                    # and the detectors must see it.
                    accepted.append((event, Decimal(0)))
                    continue
                version_field = version_fields.get(rating.price_version)
                if version_field is None:
                    version_field = length_delimited(_PRICE_VERSION, rating.price_version.encode())
                    version_fields[rating.price_version] = version_field
                # A RatedUsageEvent written field by field around the event's encoding.
                parts = [
                    length_delimited(_EVENT, raw),
                    length_delimited(_COST, str(rating.cost_krw).encode()),
                    version_field,
                    rated_time_field,
                ]
                seconds = event.event_time.seconds
                if seconds - seconds % 60 < late_before:
                    parts.append(_LATE)
                result.rated.append((key, b"".join(parts)))
                accepted.append((event, rating.cost_krw))
        if self.detection is not None:
            found = self.detection.process(accepted, sources)
            result.alerts = [to_record(alert) for alert in found]
        return result

    def _dead(
        self,
        result: BatchResult,
        record: RawRecord,
        payload: bytes,
        key: bytes | None,
        code: str,
        reason: str,
        now: datetime,
    ) -> None:
        letter = pb.DeadLetter(
            payload=payload,
            reason_code=code,
            reason=reason,
            source_topic=self.source_topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        letter.dead_letter_time.FromDatetime(now)
        result.dead.append((key, letter.SerializeToString()))
        result.reasons[code] = result.reasons.get(code, 0) + 1
