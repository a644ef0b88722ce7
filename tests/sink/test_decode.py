"""What the sink takes from a block of Kafka records (sink/service.py decode and check_rated):
rated events ClickHouse can store as they are, alerts by their topic, and a dead letter naming
the problem for anything else, with its source position. The bounds of the check are those of
the ledger's columns: a value at a bound is stored exactly by the real engine."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import ConsumerRecord
from clickhouse_connect.driver.client import Client
from google.protobuf.message import DecodeError

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import TopicSettings
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.sink.event_writer import write_rated_records
from civicmeter.sink.service import check_rated, decode
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
        elif name in ("event_id", "organization_id"):
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
        ({"price_version": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"event_id": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"organization_id": ""}, "events[1] has no event_id, organization_id or price_version"),
        ({"event_time_seconds": -1}, "events[1].event_time is out of range"),
        ({"event_time_seconds": LAST_SECOND + 1}, "events[1].event_time is out of range"),
    ],
)
def test_an_event_the_ledger_cannot_hold_is_named(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(DecodeError) as refused:
        check_rated(batch_of(changed(), changed(**fields), changed()))
    assert str(refused.value) == problem


def test_a_block_is_sorted_by_topic_and_a_bad_record_becomes_a_dead_letter_alone() -> None:
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
    assert decoded.rated == [good] and decoded.rated_events == 2
    assert decoded.alerts == [opened]
    assert [(d.source_topic, d.source_partition, d.source_offset) for d in decoded.dead] == [
        (TOPICS.rated, 3, 11), (TOPICS.alerts, 0, 13), (TOPICS.rated, 0, 14),
    ]  # fmt: skip
    assert [d.reason_code for d in decoded.dead] == ["undecodable"] * 3
    assert decoded.dead[0].reason == (
        f"not a record of {TOPICS.rated}: events[0].cost_krw is not a decimal of at most 6 places"
    )
    assert decoded.dead[1].reason == (
        f"not a record of {TOPICS.alerts}: missing dedup_key or organization_id"
    )
    assert decoded.dead[2].reason.startswith(f"not a record of {TOPICS.rated}: ")
    assert [d.payload for d in decoded.dead] == [bad, records[3].value, b"\xff\xff\xff"]
    assert all(
        d.dead_letter_time.ToDatetime(UTC) >= before.replace(microsecond=0) for d in decoded.dead
    )


def test_values_at_the_checks_bounds_are_stored_exactly(clickhouse: Client) -> None:
    """What check_rated lets through, the ledger holds: the largest cost and the last second."""
    largest = changed(cost_krw="999999999999.999999", event_id="evt-largest")
    last = changed(event_time_seconds=LAST_SECOND, event_id="evt-last")
    last.event.event_time.nanos = 999_000_000
    first = changed(event_time_seconds=0, event_id="evt-first", cost_krw="0")
    value = batch_of(largest, last, first)
    assert check_rated(value) == 3
    assert write_rated_records(clickhouse, [value], 3).inserted == 3
    rows = clickhouse.query(
        "SELECT event_id, toString(cost_krw), toUnixTimestamp64Milli(event_time) "
        "FROM usage_events FINAL"
    ).result_rows
    stored = {str(row[0]): (str(row[1]), int(row[2])) for row in rows}
    assert Decimal(stored["evt-largest"][0]) == Decimal("999999999999.999999")
    assert stored["evt-last"][1] == LAST_SECOND * 1000 + 999
    assert stored["evt-first"][1] == 0
