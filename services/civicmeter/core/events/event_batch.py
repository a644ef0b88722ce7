"""Batch records: the many events one usage.raw or usage.rated Kafka record carries.

A record's value is a UsageEventBatch (usage.raw) or a RatedUsageEventBatch (usage.rated):
both are the repeated field 1 over the events' encodings, so a batch is assembled by framing
encodings already at hand, without building or re-encoding messages.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.wire import length_delimited, tag

_EVENTS = tag(pb.UsageEventBatch.EVENTS_FIELD_NUMBER)
assert pb.RatedUsageEventBatch.EVENTS_FIELD_NUMBER == pb.UsageEventBatch.EVENTS_FIELD_NUMBER


def frame(encoded: bytes) -> bytes:
    """One event's entry in a batch record."""
    return length_delimited(_EVENTS, encoded)


def encode_event_batch(events: Iterable[Message | bytes]) -> bytes:
    """A batch record's value from events (messages, or their encodings)."""
    return b"".join(frame(e if isinstance(e, bytes) else e.SerializeToString()) for e in events)
