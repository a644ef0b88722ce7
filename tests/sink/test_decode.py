"""What the sink takes from a block of Kafka records (sink/service.py decode, sink/rated_check.py):
rated events ClickHouse can store as they are, alerts by their topic, and a dead letter naming
the problem for anything else, with its source position. The bounds of the check are those of
the ledger's columns: a value at a bound is stored exactly by the real engine."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import ConsumerRecord
from clickhouse_connect.driver.client import Client
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import TopicSettings
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.sink.event_writer import write_rated_records
from civicmeter.sink.rated_check import rated_events_of, refusals
from civicmeter.sink.service import decode, refused_letters
from tests.core.test_alert_store import alert
from tests.factories import event
from tests.sink.test_event_writer import rated

TOPICS = TopicSettings()
LAST_SECOND = 10_413_791_999  # 2299-12-31T23:59:59Z: the last second the check lets through


def record(
    topic: str, value: bytes, offset: int = 0, partition: int = 0
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, 0, len(value), ())


def batch_of(*events: pb.RatedUsageEvent) -> bytes:
    return encode_event_batch(events)


def changed(**fields: object) -> pb.RatedUsageEvent:
    """A rated event with fields of it (cost_krw, price_version) or its event changed."""
    [message] = rated(event())
    for name, value in fields.items():
        if name == "event_time_seconds":
            message.event.event_time.seconds = int(str(value))
        elif name in ("event_id", "organization_id", "purpose"):
            setattr(message.event, name, value)
        else:
            setattr(message, name, value)
    return message


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cost_krw": "1.0000001"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "1234567890123"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "-1"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "1e3"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": ""}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "1\x002"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "1\n"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"cost_krw": "\u0663"}, "events[1].cost_krw is not a decimal of at most 6 places"),
        ({"price_version": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"event_id": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"organization_id": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"event_time_seconds": -1}, "events[1].event_time is out of range"),
        ({"event_time_seconds": LAST_SECOND + 1}, "events[1].event_time is out of range"),
    ],
)
def test_an_event_the_ledger_cannot_hold_is_named(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(DecodeError) as refused:
        rated_events_of(batch_of(changed(), changed(**fields), changed()))
    assert str(refused.value) == problem


_COSTS = st.one_of(
    # Costs a decimal conversion would take, or that a lax check would: each must be refused.
    st.sampled_from(["-1", "+1", " 1", "1 ", "1.", ".5", "1e3", "0x10", "1.0000001", "1\n"]),
    st.from_regex(r"\d{1,12}(\.\d{1,6})?", fullmatch=True),
    st.text(alphabet="0123456789.\x00\n-e\u0663", max_size=16),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            _COSTS,
            st.sampled_from(["evt-1", ""]),
            st.sampled_from(["seoul", ""]),
            st.sampled_from(["2026-11", ""]),
            st.sampled_from([0, 1_764_000_000, LAST_SECOND, -1, LAST_SECOND + 1]),
        ),
        max_size=8,
    )
)
def test_the_column_check_is_the_event_by_event_check(
    values: list[tuple[str, str, str, str, int]],
) -> None:
    """Whatever the record holds, the columns' verdict is the one of a loop over its events:
    every event storable (its count), or the first problem named."""
    events = [
        changed(cost_krw=c, event_id=e, organization_id=o, price_version=p, event_time_seconds=t)
        for c, e, o, p, t in values
    ]
    value = batch_of(*events)
    expected: str | int = len(events)
    for index, message in enumerate(events):
        if not (message.event.event_id and message.event.organization_id and message.price_version):
            expected = f"events[{index}] has no event_id, organization_id or price_version"
        elif not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,6})?", message.cost_krw):
            expected = f"events[{index}].cost_krw is not a decimal of at most 6 places"
        elif not 0 <= message.event.event_time.seconds <= LAST_SECOND:
            expected = f"events[{index}].event_time is out of range"
        else:
            continue
        break
    try:
        outcome: str | int = rated_events_of(value)
    except DecodeError as refused:
        outcome = str(refused)
    assert outcome == expected


def test_a_block_is_sorted_by_topic_and_a_bad_record_becomes_a_dead_letter_alone(
    clickhouse: Client,
) -> None:
    good = batch_of(*rated(event(), event()))
    bad = batch_of(changed(cost_krw="0.1234567"))
    opened = alert("k1", "e1")
    records = [
        record(TOPICS.rated, good, offset=10),
        record(TOPICS.rated, bad, offset=11, partition=3),
        record(TOPICS.alerts, opened.SerializeToString(), offset=12),
        record(TOPICS.alerts, alert_pb2.Alert(organization_id="seoul").SerializeToString(), 13),
        record(TOPICS.rated, b"\xff\xff\xff", offset=14),
    ]
    before = datetime.now(UTC)
    decoded = decode(records, TOPICS)
    assert decoded.rated == [good, bad, b"\xff\xff\xff"]
    assert decoded.alerts == [opened]
    # The rated records are checked by the write, which stores the good one's events alone.
    written = write_rated_records(clickhouse, decoded.rated)
    assert (written.inserted, written.duplicates) == (2, 0)
    assert clickhouse.query("SELECT count() FROM usage_events").result_rows == [(2,)]
    dead = decoded.dead + refused_letters(decoded, written)
    assert [(d.source_topic, d.source_partition, d.source_offset) for d in dead] == [
        (TOPICS.alerts, 0, 13), (TOPICS.rated, 3, 11), (TOPICS.rated, 0, 14),
    ]  # fmt: skip
    assert [d.reason_code for d in dead] == ["undecodable"] * 3
    assert dead[0].reason == (
        f"not a record of {TOPICS.alerts}: missing dedup_key or organization_id"
    )
    assert dead[1].reason == (
        f"not a record of {TOPICS.rated}: events[0].cost_krw is not a decimal of at most 6 places"
    )
    assert dead[2].reason.startswith(f"not a record of {TOPICS.rated}: ")
    assert [d.payload for d in dead] == [records[3].value, bad, b"\xff\xff\xff"]
    assert all(d.dead_letter_time.ToDatetime(UTC) >= before.replace(microsecond=0) for d in dead)


def test_values_at_the_checks_bounds_are_stored_exactly(clickhouse: Client) -> None:
    """What rated_events_of lets through, the ledger holds: the largest cost and the last second."""
    largest = changed(cost_krw="999999999999.999999", event_id="evt-largest")
    last = changed(event_time_seconds=LAST_SECOND, event_id="evt-last")
    last.event.event_time.nanos = 999_000_000
    first = changed(event_time_seconds=0, event_id="evt-first", cost_krw="0")
    value = batch_of(largest, last, first)
    assert rated_events_of(value) == 3
    assert write_rated_records(clickhouse, [value]).inserted == 3
    rows = clickhouse.query(
        "SELECT event_id, toString(cost_krw), toUnixTimestamp64Milli(event_time) "
        "FROM usage_events FINAL"
    ).result_rows
    stored = {str(row[0]): (str(row[1]), int(row[2])) for row in rows}
    assert Decimal(stored["evt-largest"][0]) == Decimal("999999999999.999999")
    assert stored["evt-last"][1] == LAST_SECOND * 1000 + 999
    assert stored["evt-first"][1] == 0


def test_text_that_is_not_utf8_is_refused_and_nothing_of_its_record_is_stored(
    clickhouse: Client,
) -> None:
    """Python's protobuf parser refuses such text; so does the check ClickHouse runs."""
    marked = batch_of(changed(event_id="evt-ok"), changed(event_id="evt-bad", purpose="QQQQ"))
    broken = marked.replace(b"QQQQ", b"Q\xff\xfeQ")
    good = batch_of(changed(event_id="evt-good"))
    written = write_rated_records(clickhouse, [broken, good])
    assert list(written.refused) == [0]
    assert written.refused[0].startswith("Error parsing message")
    rows = clickhouse.query("SELECT event_id FROM usage_events").result_rows
    assert rows == [("evt-good",)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(_COSTS, st.sampled_from([0, 1_764_000_000, LAST_SECOND, -1, LAST_SECOND + 1])),
        min_size=1,
        max_size=4,
    )
)
def test_clickhouse_stores_exactly_what_the_python_check_lets_through(
    clickhouse: Client, values: list[tuple[str, int]]
) -> None:
    """The engine's check as it stages a record (sink/event_writer.py) and the Python check
    refuse the same records: what passes both is stored whole, the rest not at all."""
    clickhouse.command("TRUNCATE TABLE usage_events")
    records = [
        batch_of(changed(cost_krw=cost, event_time_seconds=second, event_id=f"evt-{index}"))
        for index, (cost, second) in enumerate(values)
    ]
    expected = {index for index in range(len(records)) if index not in refusals(records)}
    written = write_rated_records(clickhouse, records)
    assert set(range(len(records))) - set(written.refused) == expected
    stored = clickhouse.query("SELECT event_id FROM usage_events").result_rows
    assert sorted(str(row[0]) for row in stored) == sorted(f"evt-{index}" for index in expected)
