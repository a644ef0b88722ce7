"""Protobuf request bodies into events (ingest/decoding.py): unknown fields dropped at every
depth and counted per event, oversized events refused from their field headers alone, and
corrupt bodies named without the protobuf library's own words."""

from __future__ import annotations

import pytest

from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.ingest.decoding import (
    MAX_EVENT_BYTES,
    UndecodableRequestError,
    check_event_sizes,
    parse_publish_request,
)
from tests.factories import event

SMUGGLED = b"PROMPT: summarise the attached resident registration numbers"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: the wire form of a string, bytes or message field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def request(*events: bytes, extra: bytes = b"") -> bytes:
    """A PublishEventsRequest body from encoded events (field 1), and any bytes after them."""
    return b"".join(field(1, e) for e in events) + extra


def test_a_request_without_unknown_fields_comes_back_whole() -> None:
    sent = [event(), event(user_id="u_" + "1" * 32)]
    body = request(*(e.SerializeToString() for e in sent))
    decoded = parse_publish_request(body)
    assert list(decoded.events) == sent
    assert decoded.unknown_field_events == 0
    assert decoded.encoded.batch == body
    assert decoded.encoded.events == [e.SerializeToString() for e in sent]


def test_unknown_fields_are_dropped_at_every_depth_and_counted_per_event() -> None:
    plain, top, nested = event(), event(), event()
    risk = nested.risk.SerializeToString() + field(99, SMUGGLED)  # inside RiskSignals
    nested_bytes = nested.SerializeToString() + field(13, risk)  # a second risk merges into it
    body = request(
        plain.SerializeToString(),
        top.SerializeToString() + field(1000, SMUGGLED),
        nested_bytes,
        extra=field(77, SMUGGLED),  # unknown on the request itself: dropped, not an event's
    )
    decoded = parse_publish_request(body)
    parsed = decoded.request
    assert decoded.unknown_field_events == 2
    assert len(parsed.events) == 3
    assert SMUGGLED not in parsed.SerializeToString()
    assert [e.event_id for e in parsed.events] == [plain.event_id, top.event_id, nested.event_id]
    assert parsed.events[1] == top  # what the schema defines is kept as sent
    # What goes on to usage.raw is the events without their unknown fields.
    assert SMUGGLED not in decoded.encoded.batch
    assert decoded.encoded.events == [e.SerializeToString() for e in parsed.events]
    assert decoded.encoded.batch == parsed.SerializeToString()


def test_a_body_in_another_encoding_is_re_encoded_and_not_counted_as_unknown() -> None:
    """Fields out of order and a field sent twice (the last wins) are the schema's own: the
    events go on as the runtime encodes them, and none counts as carrying unknown fields."""
    sent = event()
    reordered = sent.SerializeToString()
    first_field = reordered[: 2 + reordered[1]]  # event_id: key, one-byte length, payload
    reordered = reordered[len(first_field) :] + field(1, b"replaced-id") + first_field
    body = request(reordered, sent.SerializeToString())
    decoded = parse_publish_request(body)
    assert decoded.unknown_field_events == 0
    assert list(decoded.events) == [sent, sent]
    assert decoded.encoded.events == [sent.SerializeToString()] * 2
    assert decoded.encoded.batch == request(*decoded.encoded.events) != body


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\x05ab",  # an event whose length runs past the end
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a key varint over 10 bytes
        field(1, b"\x0a\x03\xff\xfe\xfd"),  # an event id that is not UTF-8
    ],
)
def test_a_corrupt_body_is_named_without_the_librarys_words(body: bytes) -> None:
    with pytest.raises(UndecodableRequestError) as refused:
        parse_publish_request(body)
    message = str(refused.value)
    assert message.startswith("the body is not a civicmeter.ingest.v1.PublishEventsRequest: ")
    assert "UsageEvent" not in message.partition(": ")[2]  # the fault, not the type's name


def test_an_event_over_the_limit_is_refused_by_its_index_before_parsing() -> None:
    small = event().SerializeToString()
    large = event().SerializeToString() + field(1000, b"x" * MAX_EVENT_BYTES)
    with pytest.raises(UndecodableRequestError) as refused:
        check_event_sizes(request(small, small, large, small))
    assert str(refused.value) == (
        f"events[2] is {len(large)} bytes, over the limit of {MAX_EVENT_BYTES} bytes an event "
        "may take"
    )
    with pytest.raises(UndecodableRequestError, match=r"^events\[2\] is"):
        parse_publish_request(request(small, small, large))


def test_events_up_to_the_limit_pass_however_large_the_body() -> None:
    base = event().SerializeToString()
    exact = base + field(1000, b"x" * (MAX_EVENT_BYTES - len(base) - 5))  # 2 + 3 header bytes
    assert len(exact) == MAX_EVENT_BYTES
    body = request(*([exact] * 5))
    check_event_sizes(body)
    decoded = parse_publish_request(body)
    assert (len(decoded.events), decoded.unknown_field_events) == (5, 5)


def test_other_fields_of_the_request_are_skipped_not_counted_as_events() -> None:
    """Varint, fixed64 and fixed32 fields between the events are stepped over by the size
    check, whose event index counts events only."""
    large = event().SerializeToString() + field(1000, b"x" * MAX_EVENT_BYTES)
    between = varint(2 << 3 | 0) + varint(300) + varint(3 << 3 | 1) + b"\0" * 8
    between += varint(4 << 3 | 5) + b"\0" * 4 + field(5, b"y" * 100)
    with pytest.raises(UndecodableRequestError, match=r"^events\[1\] is"):
        check_event_sizes(request(event().SerializeToString()) + between + request(large))


@pytest.mark.parametrize(
    "tail",
    [
        b"\x0a" + varint(MAX_EVENT_BYTES) + b"abc",  # an event cut short: within the limit
        varint(6 << 3 | 3) + field(1, b"x" * (2 * MAX_EVENT_BYTES)),  # a group: not ours
    ],
)
def test_a_malformed_large_body_is_left_to_the_parser_to_name(tail: bytes) -> None:
    half = event().SerializeToString()
    half += field(1000, b"x" * (MAX_EVENT_BYTES // 2))
    body = request(half, half) + tail
    check_event_sizes(body)
    with pytest.raises(UndecodableRequestError) as refused:
        parse_publish_request(body)
    assert "events[" not in str(refused.value)


def test_the_request_type_round_trips_what_the_publisher_sends() -> None:
    sent = ingest_pb.PublishEventsRequest(events=[event(), event()])
    decoded = parse_publish_request(sent.SerializeToString())
    assert decoded.request == sent and decoded.unknown_field_events == 0
