"""The processor's work on one micro-batch, free of Kafka: decode, validate, rate, detect.

A usage.raw record is a UsageEventBatch (many events of one partition, in order). Each event
is handled on its own: whatever cannot be accepted becomes a DeadLetter carrying that event's
bytes and the reason, so nothing is lost silently; a bad event never stops the batch, and an
undecodable record is dead-lettered whole.

The per-event work is kept to a few Python operations: a record is decoded once and encoded
again once (without the fields the schema does not define), and each event's field of that
encoding opens its rated event as it is; validation checks each rule over the whole record
(validate_batch); events are rated per tariff and span of unchanged prices in whole micro-won
(GroupRate), and PriceCatalog.rate, the Decimal path, rates only what a group cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import add
from typing import cast

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.validation import (
    EventColumns,
    Identity,
    TimeWindow,
    ValidationError,
    validate_batch,
)
from civicmeter.core.events.wire import length_delimited, length_delimited_fields, tag, varint_field
from civicmeter.core.kafka import event_key
from civicmeter.core.pricing import GroupRate, PriceCatalog, UnpricedError, micro_won_text
from civicmeter.processor.alerts import to_record
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.engine import SourceMark

# Keys of RatedUsageEvent's fields, all length-delimited. Its event (field 1) is encoded as
# a UsageEventBatch's event (field 1 too): a batch record's field is the rated event's start.
_COST, _PRICE_VERSION, _RATED_TIME = (tag(number) for number in (2, 3, 4))
assert pb.RatedUsageEvent.EVENT_FIELD_NUMBER == pb.UsageEventBatch.EVENTS_FIELD_NUMBER
_LATE = varint_field(5, 1)  # RatedUsageEvent.late = true
_ZERO = Decimal(0)
# A denied request never left: stored at cost 0, rated by no price.
_DENIED_COST, _DENIED_VERSION = str(_ZERO), "denied"
_CACHE_LIMIT = 100_000  # identities and costs remembered across batches


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


@dataclass(frozen=True)
class _Who:
    """What an identity gives every event that carries it."""

    key: bytes  # the partition key
    tariff: tuple[str, str, str, str]  # (organisation, provider, service, model)
    denied: bool


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
        self._who: dict[Identity, _Who] = {}
        self._costs: dict[int, Decimal] = {}  # micro-won -> the cost as a Decimal

    def process(self, records: Sequence[RawRecord], now: datetime | None = None) -> BatchResult:
        now = now or datetime.now(UTC)
        result = BatchResult()
        rated_time = Timestamp()
        rated_time.FromDatetime(now)
        batch = _Batch(
            self,
            result,
            now,
            length_delimited(_RATED_TIME, rated_time.SerializeToString()),
            # Events whose minute ended before this are late: minute start < late_before.
            now.timestamp() - self.allowed_lateness.total_seconds() - 60,
        )
        earliest = now.timestamp() - self.time_window.max_age.total_seconds()
        latest = now.timestamp() + self.time_window.max_future.total_seconds()
        sources: list[SourceMark] = []  # where each record's events start in `accepted`
        for record in records:
            try:
                if record.value is None:
                    raise DecodeError("the record has no value")
                decoded = pb.UsageEventBatch.FromString(record.value)
            except DecodeError as exc:
                self._dead(
                    result, record, record.value or b"", None, "undecodable",
                    f"not a UsageEventBatch: {exc}", now,
                )  # fmt: skip
                continue
            events = list(decoded.events)  # each event's message made once, used by every pass
            result.events += len(events)
            if not events:
                continue
            # No byte the schema does not define goes on (prompt text could hide there). The
            # batch is encoded again once, and each event's field in it is reused as is.
            decoded.DiscardUnknownFields()
            encoded = decoded.SerializeToString()
            fields = length_delimited_fields(encoded)
            columns, errors = validate_batch(events, earliest, latest, self.time_window, encoded)
            sources.append((len(batch.accepted), record.partition, record.offset))
            batch.rate(record, events, fields, columns, errors)
        if self.detection is not None:
            found = self.detection.process(batch.accepted, sources, batch.columns)
            result.alerts = [to_record(alert) for alert in found]
        return result

    def who(self, identity: Identity) -> _Who:
        who = self._who.get(identity)
        if who is None:
            _, organization, _, user, _, provider, service, model, _, _, decision = identity
            who = _Who(
                event_key(organization, user),
                (organization, provider, service, model),
                decision == pb.DECISION_DENY,
            )
            if len(self._who) >= _CACHE_LIMIT:
                self._who.clear()
            self._who[identity] = who
        return who

    def cost(self, micro: int) -> Decimal:
        cost = self._costs.get(micro)
        if cost is None:
            cost = Decimal(micro_won_text(micro))
            if len(self._costs) >= _CACHE_LIMIT:
                self._costs.clear()
            self._costs[micro] = cost
        return cost

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


class _Batch:
    """One micro-batch's rating: the rates its identities resolved, the rated events' tails."""

    def __init__(
        self,
        processor: BatchProcessor,
        result: BatchResult,
        now: datetime,
        rated_time_field: bytes,
        late_before: float,
    ) -> None:
        self.processor = processor
        self.catalog = processor.catalog
        self.result = result
        self.now = now
        self.rated_time_field = rated_time_field
        self.late_before = late_before
        self.accepted: list[tuple[pb.UsageEvent, Decimal]] = []
        # The accepted events' fields as validation read them, for the detection engine.
        self.columns = EventColumns([], [], [], [], [], [])
        # Per span of unchanged prices: identity -> (partition key, group rate, denied). The
        # group rates come from the catalog, which resolves each tariff once per span.
        self.spans: dict[int, dict[Identity, tuple[bytes, GroupRate | None, bool]]] = {}
        # (micro-won, price version) -> the rated event's fields after the event; and of late ones
        self.tails: dict[tuple[int, str], bytes] = {}
        self.late_tails: dict[tuple[int, str], bytes] = {}

    def rates(self, span: int) -> dict[Identity, tuple[bytes, GroupRate | None, bool]]:
        rates = self.spans.get(span)
        if rates is None:
            rates = self.spans[span] = {}
        return rates

    def resolve(
        self, rates: dict[Identity, tuple[bytes, GroupRate | None, bool]], identity: Identity,
        span: int, seconds: int,
    ) -> tuple[bytes, GroupRate | None, bool]:  # fmt: skip
        who = self.processor.who(identity)
        group = None
        if not who.denied:
            group = self.catalog.group_rate(span, *who.tariff, seconds)
        rates[identity] = entry = (who.key, group, who.denied)
        return entry

    def rate(
        self,
        record: RawRecord,
        events: Sequence[pb.UsageEvent],
        fields: list[bytes],
        columns: EventColumns,
        errors: dict[int, ValidationError],
    ) -> None:
        processor, catalog = self.processor, self.catalog
        rated, accepted, tails, costs = (
            self.result.rated,
            self.accepted,
            self.tails,
            processor._costs,
        )
        kept = self.columns
        seconds = columns.seconds
        first, last = min(seconds), max(seconds)
        # A batch's events are close in time: usually one span of unchanged prices for all.
        span = catalog.span_of(first)
        one_span = span == catalog.span_of(last)
        rates = self.rates(span)
        late_before = self.late_before
        none_late = first - first % 60 >= late_before
        # Late or not, the same for all: the minutes of the first and of the last event tell.
        all_late = last - last % 60 < late_before
        uniform = not errors and one_span and (none_late or all_late)
        if uniform and self.rate_all(rates, span, events, fields, columns, all_late):
            return
        for i, (event, encoded, identity, quantities, second) in enumerate(
            zip(events, fields, columns.identities, columns.quantities, seconds, strict=True)
        ):
            if errors and i in errors:
                key = event_key(identity[1], identity[3])
                self.dead(record, event.SerializeToString(), key, "invalid_field", str(errors[i]))
                continue
            if one_span:
                entry = rates.get(identity) or self.resolve(rates, identity, span, second)
            else:
                event_span = catalog.span_of(second)
                entry = self.rates(event_span).get(identity) or self.resolve(
                    self.rates(event_span), identity, event_span, second
                )
            key, group, denied = entry
            micro = None if group is None else group.micro_won(quantities)
            if micro is not None:
                assert group is not None
                version = group.version
                if group.contract_fields:
                    version = group.price_version(quantities)
                tail = tails.get((micro, version))
                if tail is None:
                    tail = tails[(micro, version)] = self.tail(micro_won_text(micro), version)
                cost = costs.get(micro)
                if cost is None:
                    cost = processor.cost(micro)
            elif denied:
                tail = self.tail(_DENIED_COST, _DENIED_VERSION)
                cost = _ZERO
            else:
                # Rated alone: the exact Decimal path gives its cost or its error.
                try:
                    rating = catalog.rate(event)
                except UnpricedError as exc:
                    self.dead(record, event.SerializeToString(), key, "unpriced", str(exc))
                    # Still a request that happened: DeepSeek is unpriced because it is
                    # banned, and the detectors must see it.
                    accepted.append((event, _ZERO))
                    kept.keep(columns, i)
                    continue
                cost = rating.cost_krw
                tail = self.tail(str(cost), rating.price_version)
            if none_late or second - second % 60 >= late_before:
                rated.append((key, encoded + tail))
            else:
                rated.append((key, encoded + tail + _LATE))
            accepted.append((event, cost))
            kept.keep(columns, i)

    def rate_all(
        self,
        rates: dict[Identity, tuple[bytes, GroupRate | None, bool]],
        span: int,
        events: Sequence[pb.UsageEvent],
        fields: list[bytes],
        columns: EventColumns,
        late: bool,
    ) -> bool:
        """The common record, all valid, all late or none, rated by group, with the fewest
        Python operations per event; False (and nothing done): rate it event by event."""
        identities = columns.identities
        found = list(map(rates.get, identities))
        entries = (
            [
                entry or self.resolve(rates, identity, span, second)
                for entry, identity, second in zip(found, identities, columns.seconds, strict=True)
            ]
            if None in found
            else cast("list[tuple[bytes, GroupRate | None, bool]]", found)
        )
        tails, costs = self.late_tails if late else self.tails, self.processor._costs
        record_tails: list[bytes] = []
        record_costs: list[Decimal] = []
        for (_, group, denied), quantities in zip(entries, columns.quantities, strict=True):
            if group is None:
                if not denied:
                    return False
                record_tails.append(self.tail(_DENIED_COST, _DENIED_VERSION, late))
                record_costs.append(_ZERO)
                continue
            micro = group.micro_won(quantities)
            if micro is None:
                return False
            version = group.price_version(quantities) if group.contract_fields else group.version
            tail = tails.get((micro, version))
            if tail is None:
                tail = tails[(micro, version)] = self.tail(micro_won_text(micro), version, late)
            cost = costs.get(micro)
            if cost is None:
                cost = self.processor.cost(micro)
            record_tails.append(tail)
            record_costs.append(cost)
        keys = [key for key, _, _ in entries]
        self.result.rated.extend(zip(keys, map(add, fields, record_tails), strict=True))
        self.accepted.extend(zip(events, record_costs, strict=True))
        self.columns.extend(columns)
        return True

    def tail(self, cost: str, version: str, late: bool = False) -> bytes:
        """A rated event's fields after its event: cost, price version, rated time, late."""
        return (
            length_delimited(_COST, cost.encode())
            + length_delimited(_PRICE_VERSION, version.encode())
            + self.rated_time_field
            + (_LATE if late else b"")
        )

    def dead(
        self, record: RawRecord, raw: bytes, key: bytes | None, code: str, reason: str
    ) -> None:
        self.processor._dead(self.result, record, raw, key, code, reason, self.now)
