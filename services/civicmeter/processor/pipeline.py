"""The processor's work on one micro-batch, free of Kafka: decode, validate, rate, aggregate.

Whatever cannot be accepted becomes a DeadLetter carrying the original bytes and the reason,
so nothing is lost silently; a bad event never stops the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from civicmeter.core.kafka import event_key
from civicmeter.core.pricing import PriceCatalog, UnpricedError
from civicmeter.core.validation import TimeWindow, ValidationError, validate_event
from civicmeter.processor.windows import MinuteWindows
from civicmeter.usage.v1 import usage_event_pb2 as pb


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    partition: int
    offset: int


@dataclass
class BatchResult:
    rated: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, RatedUsageEvent)
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, DeadLetter)
    windows: list[pb.CostWindow] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by reason code


class BatchProcessor:
    def __init__(
        self, catalog: PriceCatalog, source_topic: str, time_window: TimeWindow = TimeWindow()
    ) -> None:
        self.catalog = catalog
        self.source_topic = source_topic
        self.time_window = time_window

    def process(self, records: Sequence[RawRecord], now: datetime | None = None) -> BatchResult:
        now = now or datetime.now(UTC)
        result = BatchResult()
        windows = MinuteWindows()
        rated_time = pb.RatedUsageEvent().rated_time
        rated_time.FromDatetime(now)
        for record in records:
            event = pb.UsageEvent()
            try:
                if record.value is None:
                    raise DecodeError("the record has no value")
                event.ParseFromString(record.value)
            except DecodeError as exc:
                self._dead(result, record, None, "undecodable", f"not a UsageEvent: {exc}", now)
                continue
            key = event_key(event.organization_id, event.user_id)
            try:
                validate_event(event, now, self.time_window)
                rating = self.catalog.rate(event)
            except ValidationError as exc:
                self._dead(result, record, key, "invalid_field", str(exc), now)
                continue
            except UnpricedError as exc:
                self._dead(result, record, key, "unpriced", str(exc), now)
                continue
            rated = pb.RatedUsageEvent(
                event=event, cost_krw=str(rating.cost_krw), price_version=rating.price_version
            )
            rated.rated_time.CopyFrom(rated_time)
            result.rated.append((key, rated.SerializeToString()))
            windows.add(event, rating.cost_krw)
        result.windows = windows.drain()
        return result

    def _dead(
        self,
        result: BatchResult,
        record: RawRecord,
        key: bytes | None,
        code: str,
        reason: str,
        now: datetime,
    ) -> None:
        letter = pb.DeadLetter(
            payload=record.value or b"",
            reason_code=code,
            reason=reason,
            source_topic=self.source_topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        letter.dead_letter_time.FromDatetime(now)
        result.dead.append((key, letter.SerializeToString()))
        result.reasons[code] = result.reasons.get(code, 0) + 1
