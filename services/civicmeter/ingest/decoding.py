"""Protobuf request bodies into usage events, keeping only the fields the schema defines.

A gateway may send field numbers this version does not know (a newer schema, or a field
smuggling prompt text). Ingest re-encodes every event before it reaches Kafka, so dropping
the unknown fields here means none of their bytes travel further; the fronts count the
events that carried any.

An event's encoding is bounded before anything is parsed: a valid event is a few KB, and the
protobuf runtime builds a map of hundreds of thousands of entries (one event's
`risk.pii_findings`) in superlinear time, seconds to minutes of a core for a body of a few MB.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtoDecodeError

from civicmeter.api.event_json import DecodeError
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb

# A valid event is at most ~7 KB: bounded identifiers and at most 64 kinds of findings.
MAX_EVENT_BYTES = 64 * 1024
_EVENTS_KEY = 1 << 3 | 2  # PublishEventsRequest.events: field 1, length-delimited


class UndecodableRequestError(DecodeError):
    """The body is not a PublishEventsRequest in the protobuf wire format (field "body")."""


def parse_publish_request(body: bytes) -> tuple[ingest_pb.PublishEventsRequest, int]:
    """The request with unknown fields dropped, and how many of its events carried any."""
    check_event_sizes(body)
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
    return request, drop_unknown_fields(request)


def drop_unknown_fields(request: ingest_pb.PublishEventsRequest) -> int:
    """Discard unknown fields at every depth; return the number of events that had any."""
    sizes = [event.ByteSize() for event in request.events]
    request.DiscardUnknownFields()
    return sum(
        1 for event, size in zip(request.events, sizes, strict=True) if event.ByteSize() != size
    )


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
                        raise UndecodableRequestError(
                            f"events[{index}] is {length} bytes, over the limit of "
                            f"{MAX_EVENT_BYTES} bytes an event may take"
                        )
                    index += 1
                position += length
            else:
                return  # a group, or not protobuf: the parser decides
    except IndexError:
        return


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
