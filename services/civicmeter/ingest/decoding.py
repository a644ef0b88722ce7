"""Protobuf request bodies into usage events, keeping only the fields the schema defines.

A gateway may send field numbers this version does not know (a newer schema, or a field
smuggling prompt text). What reaches Kafka is each event as the protobuf runtime encodes what
was parsed (the body's own bytes only where they are exactly that), so dropping the unknown
fields here means none of their bytes travel further; the fronts count the events that
carried any.

An event's encoding is bounded before anything is parsed (the runtime slices the events out
without parsing them; a malformed body's field headers are read instead): a valid event is a
few KB, and the protobuf runtime builds a map of hundreds of thousands of entries (one event's
`risk.pii_findings`) in superlinear time, seconds to minutes of a core for a body of a few MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtoDecodeError

from civicmeter.api.event_json import DecodeError
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.encodings import EncodedEvents, split_events

# A valid event is at most ~7 KB: bounded identifiers and at most 64 kinds of findings.
MAX_EVENT_BYTES = 64 * 1024
_EVENTS_KEY = 1 << 3 | 2  # PublishEventsRequest.events: field 1, length-delimited


class UndecodableRequestError(DecodeError):
    """The body is not a PublishEventsRequest in the protobuf wire format (field "body")."""


@dataclass(frozen=True)
class DecodedRequest:
    """A PublishEventsRequest without unknown fields, its events as encoded for usage.raw, and
    how many of them carried unknown fields."""

    request: ingest_pb.PublishEventsRequest
    encoded: EncodedEvents
    unknown_field_events: int

    @property
    def events(self) -> Sequence[pb.UsageEvent]:
        return self.request.events


def parse_publish_request(body: bytes) -> DecodedRequest:
    """The request with unknown fields dropped, its events' encodings, and how many of its
    events carried unknown fields.

    Most bodies are exactly the encoding the protobuf runtime writes for what they hold: then
    the body itself is the events' UsageEventBatch, and no event carried an unknown field.
    Only another body is compared event by event.
    """
    try:
        encodings: list[bytes] | None = split_events(body)
    except ProtoDecodeError:
        encodings = None  # malformed: the sizes are read from the field headers, if they can be
    if encodings is None:
        check_event_sizes(body)
    elif len(body) > MAX_EVENT_BYTES and max(map(len, encodings)) > MAX_EVENT_BYTES:
        index, event = next((i, e) for i, e in enumerate(encodings) if len(e) > MAX_EVENT_BYTES)
        raise _oversized(index, len(event))
    request = ingest_pb.PublishEventsRequest()
    try:
        request.ParseFromString(body)
    except ProtoDecodeError as exc:
        # The library's text names the message type and the fault ("wire format was
        # corrupt", "string field had bad UTF-8"); keep only the fault.
        fault = str(exc).rpartition(": ")[2] or "wire format was corrupt"
        raise UndecodableRequestError(
            f"the body is not a civicmeter.ingest.v1.PublishEventsRequest: {fault}"
        ) from None
    request.DiscardUnknownFields()
    encoded = request.SerializeToString()
    if encoded == body and encodings is not None:
        return DecodedRequest(request, EncodedEvents(body, encodings), 0)
    return DecodedRequest(
        request, EncodedEvents.of_batch(encoded), _events_with_unknown_fields(body, request)
    )


def _events_with_unknown_fields(body: bytes, known: ingest_pb.PublishEventsRequest) -> int:
    """How many events of `body` carry fields that `known` (the same request, its unknown
    fields dropped) does not: an unknown field is the only difference in their sizes."""
    sent = ingest_pb.PublishEventsRequest.FromString(body)
    return sum(
        1 for event, kept in zip(sent.events, known.events, strict=True)
        if event.ByteSize() != kept.ByteSize()
    )  # fmt: skip


def check_event_sizes(body: bytes) -> None:
    """Refuse a request holding an event over MAX_EVENT_BYTES, reading only the field headers
    of the request; a malformed body is left to the parser to name."""
    if len(body) <= MAX_EVENT_BYTES:
        return  # no event in it can be larger
    position, index = 0, 0
    try:
        while position < len(body):
            key, position = _varint(body, position)
            wire_type = key & 7
            if wire_type == 0:
                _, position = _varint(body, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, position = _varint(body, position)
                if key == _EVENTS_KEY:
                    if length > MAX_EVENT_BYTES:
                        raise _oversized(index, length)
                    index += 1
                position += length
            else:
                return  # a group, or not protobuf: the parser decides
    except IndexError:
        return


def _oversized(index: int, size: int) -> UndecodableRequestError:
    return UndecodableRequestError(
        f"events[{index}] is {size} bytes, over the limit of {MAX_EVENT_BYTES} bytes an event "
        "may take"
    )


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it; IndexError when truncated."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")
