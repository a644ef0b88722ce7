"""The batch pipeline against the event-at-a-time pipeline it replaced, byte for byte.

`one_at_a_time` is the processor's former loop, kept here as the reference: every event
decoded, stripped of unknown fields, re-encoded, validated, rated with PriceCatalog.rate and
written field by field. Over generated batches of good and bad events, the batch pipeline
must give the same rated records, the same dead letters (reasons and messages included) and
hand the detectors the same events at the same costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.validation import TimeWindow, ValidationError, validate_event_at
from civicmeter.core.events.wire import length_delimited, tag, varint_field
from civicmeter.core.kafka import event_key
from civicmeter.core.pricing import PriceCatalog, Rating, UnpricedError, parse_catalog
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from tests.factories import NOW, PRICES_YAML, catalog, user_id

import yaml  # isort: skip

WINDOW = TimeWindow()
USD_CATALOG = parse_catalog(yaml.safe_load(PRICES_YAML), "prices.yaml")
USD_NOW = datetime(2025, 3, 20, 3, 0, tzinfo=UTC)  # while the Seoul contract is in force


def one_at_a_time(
    records: Sequence[RawRecord], prices: PriceCatalog, now: datetime
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes | None, bytes]], list[tuple[bytes, str]]]:
    """The former BatchProcessor.process: (rated, dead letters, (event, cost) to detect)."""
    rated: list[tuple[bytes, bytes]] = []
    dead: list[tuple[bytes | None, bytes]] = []
    accepted: list[tuple[bytes, str]] = []
    stamp = Timestamp()
    stamp.FromDatetime(now)
    rated_time = length_delimited(tag(4), stamp.SerializeToString())
    earliest = now.timestamp() - WINDOW.max_age.total_seconds()
    latest = now.timestamp() + WINDOW.max_future.total_seconds()
    late_before = now.timestamp() - timedelta(hours=1).total_seconds() - 60

    def letter(record: RawRecord, payload: bytes, key: bytes | None, code: str, why: str) -> None:
        message = pb.DeadLetter(
            payload=payload,
            reason_code=code,
            reason=why,
            source_topic="usage.raw",
            source_partition=record.partition,
            source_offset=record.offset,
        )
        message.dead_letter_time.FromDatetime(now)
        dead.append((key, message.SerializeToString()))

    for record in records:
        try:
            assert record.value is not None
            events = pb.UsageEventBatch.FromString(record.value).events
        except DecodeError as exc:
            letter(
                record, record.value or b"", None, "undecodable", f"not a UsageEventBatch: {exc}"
            )
            continue
        for event in events:
            event.DiscardUnknownFields()
            raw = event.SerializeToString()
            key = event_key(event.organization_id, event.user_id)
            try:
                validate_event_at(event, earliest, latest, WINDOW)
                rating = (
                    Rating(Decimal(0), "denied")
                    if event.decision == pb.DECISION_DENY
                    else prices.rate(event)
                )
            except ValidationError as exc:
                letter(record, raw, key, "invalid_field", str(exc))
                continue
            except UnpricedError as exc:
                letter(record, raw, key, "unpriced", str(exc))
                accepted.append((raw, "0"))
                continue
            parts = [
                length_delimited(tag(1), raw),
                length_delimited(tag(2), str(rating.cost_krw).encode()),
                length_delimited(tag(3), rating.price_version.encode()),
                rated_time,
            ]
            seconds = event.event_time.seconds
            if seconds - seconds % 60 < late_before:
                parts.append(varint_field(5, 1))
            rated.append((key, b"".join(parts)))
            accepted.append((raw, str(rating.cost_krw)))
    return rated, dead, accepted


class Recorder:
    """Stands in for the detection engine: keeps what the pipeline hands the detectors."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str]] = []

    def process(self, batch: Sequence[tuple[pb.UsageEvent, Decimal]], *sources: Any) -> list[Any]:
        self.seen += [(event.SerializeToString(), str(cost)) for event, cost in batch]
        return []


def mostly(good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """`good` nineteen times in twenty, else one of `bad`: most events pass most rules."""
    return st.integers(min_value=0, max_value=19).flatmap(
        lambda n: st.just(good) if n else st.sampled_from(bad)
    )


ids = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(lambda n: f"evt-{n}"),
    st.sampled_from(["a.b:c/d-e_", "x" * 128]),
)
bad_ids = st.sampled_from(["", "has space", "x" * 129, "é", "evt\n1"])
users = st.sampled_from([user_id("kim"), user_id("lee"), user_id("park")])
bad_users = st.sampled_from(["kim@seoul.go.kr", "u_" + "A" * 32, ""])
tariffs = st.sampled_from(
    [
        ("openai", "openai-api", "gpt-4o"),
        ("openai", "openai-api", "gpt-4o"),
        ("openai", "openai-api", "whisper-1"),
        ("openai", "openai-api", ""),
        ("openai", "chatgpt", ""),
        ("openai", "chatgpt", "team"),
        ("deepseek", "deepseek-chat", "deepseek-r1"),
    ]
)
bad_tariffs = st.sampled_from(
    [("OpenAI", "openai-api", "gpt-4o"), ("openai", "openai-api", "bad model!")]
)
good_usages = st.lists(
    st.tuples(
        st.sampled_from(["input_tokens", "output_tokens", "seat_months", "requests"]),
        st.integers(min_value=1, max_value=50_000),
    ),
    min_size=1,
    max_size=3,
)
any_usages = st.lists(
    st.tuples(st.sampled_from(QUANTITIES), st.integers(min_value=-3, max_value=200_000_000)),
    max_size=4,
)
ages = st.one_of(  # seconds before now: late or on time, mostly; in the future or too old
    st.integers(min_value=0, max_value=7_200),
    st.integers(min_value=0, max_value=7_200),
    st.integers(min_value=0, max_value=7_200),
    st.integers(min_value=-600, max_value=-1),
    st.integers(min_value=7_200, max_value=450 * 86_400),
)
findings = st.dictionaries(
    st.sampled_from(["rrn", "phone", "Bad Kind", ""]),
    st.integers(min_value=0, max_value=200_000),
    max_size=3,
)
categories = st.sampled_from(["", "work", "Not OK"])


@st.composite
def events(draw: st.DrawFn, now: datetime) -> bytes:
    """One encoded event; now and then a field breaks a rule or an unknown field rides along."""
    rare = st.integers(min_value=0, max_value=9).map(lambda n: n == 0)
    provider, service, model = draw(st.one_of(tariffs, tariffs, tariffs, bad_tariffs))
    message = pb.UsageEvent(
        event_id=draw(ids if draw(st.integers(0, 19)) else bad_ids),
        gateway_id=draw(mostly("gw-seoul-1", "gw 1")),
        organization_id=draw(mostly("seoul", "", "Seoul City")) if draw(rare) else "seoul",
        department_id=draw(mostly("digital-policy", "x" * 200)),
        user_id=draw(users if draw(st.integers(0, 19)) else bad_users),
        account_kind=draw(mostly(1, 2, 0, 7)),
        provider_name=provider,
        service_id=service,
        request_model=model,
        operation_name=draw(mostly("chat", "subscription", "chitchat")),
        purpose=draw(mostly("", "administrative-work", "Not An Id")),
        decision=draw(mostly(1, 0, 3, 4, 4, 9)),
    )
    for name, value in draw(any_usages if draw(rare) else good_usages):
        setattr(message.usage, name, value)
    if draw(mostly(True, False)):
        message.event_time.FromDatetime(now - timedelta(seconds=draw(ages)))
        message.event_time.nanos = draw(mostly(5, 0, 999_999_999, 1_000_000_000))
    if draw(rare):
        message.risk.SetInParent()
        message.risk.pii_findings.update(draw(findings))
        message.risk.content_category = draw(categories)
    if draw(rare):
        message.decision_rule_ids.extend(
            draw(st.lists(st.sampled_from(["rule-1", "Bad Rule", ""]), max_size=40))
        )
    if draw(rare):
        message.reported_cost.currency_code = draw(st.sampled_from(["KRW", "won"]))
        message.reported_cost.units = draw(st.sampled_from([5, -1]))
    encoded = message.SerializeToString()
    if draw(rare):
        encoded += b"\xfa\x06\x04text"  # field 111: unknown, to be dropped
    return encoded


@st.composite
def batches(draw: st.DrawFn) -> tuple[PriceCatalog, datetime, list[RawRecord]]:
    prices, now = draw(st.sampled_from([(catalog(), NOW), (USD_CATALOG, USD_NOW)]))
    records = []
    for offset in range(draw(st.integers(min_value=1, max_value=3))):
        if draw(st.integers(min_value=0, max_value=19)) == 0:
            value = b"\xff\xfe not protobuf"
        else:
            value = encode_event_batch(draw(st.lists(events(now), min_size=0, max_size=12)))
        records.append(RawRecord(value, 2, offset))
    return prices, now, records


@settings(max_examples=300, deadline=None)
@given(batch=batches())
def test_the_batch_pipeline_gives_what_rating_one_event_at_a_time_gave(
    batch: tuple[PriceCatalog, datetime, list[RawRecord]],
) -> None:
    prices, now, records = batch
    recorder = Recorder()
    processor = BatchProcessor(prices, "usage.raw", detection=cast(DetectionEngine, recorder))
    result = processor.process(records, now)
    rated, dead, accepted = one_at_a_time(records, prices, now)
    assert result.rated == rated
    assert result.dead == dead
    assert recorder.seen == accepted


def test_the_generated_batches_reach_every_outcome() -> None:
    """The property above is not vacuous: its examples rate, refuse and leave unpriced."""
    reasons: dict[str, int] = {}
    rated = 0

    @settings(max_examples=150, deadline=None)
    @given(batch=batches())
    def run(batch: tuple[PriceCatalog, datetime, list[RawRecord]]) -> None:
        nonlocal rated
        prices, now, records = batch
        result = BatchProcessor(prices, "usage.raw").process(records, now)
        rated += len(result.rated)
        for code, count in result.reasons.items():
            reasons[code] = reasons.get(code, 0) + count

    run()
    assert rated > 0
    assert set(reasons) == {"invalid_field", "unpriced", "undecodable"}
