"""Protobuf request bodies into usage events, keeping only the fields the schema defines.

A gateway may send field numbers this version does not know (a newer schema, or a field
smuggling prompt text). Ingest re-encodes every event before it reaches Kafka, so dropping
the unknown fields here means none of their bytes travel further; the fronts count the
events that carried any.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtoDecodeError

from civicmeter.core.event_json import DecodeError
from civicmeter.ingest.v1 import ingest_service_pb2 as ingest_pb


class UndecodableRequestError(DecodeError):
    """The body is not a PublishEventsRequest in the protobuf wire format (field "body")."""


def parse_publish_request(body: bytes) -> tuple[ingest_pb.PublishEventsRequest, int]:
    """The request with unknown fields dropped, and how many of its events carried any."""
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
