"""Events as encodings: a UsageEventBatch's bytes split into its events' encodings and joined
back, by the protobuf runtime rather than a Python loop over the events.

A UsageEventBatch (and a PublishEventsRequest, whose events are also its field 1) is read as
a projection that declares field 1 as `repeated bytes`: the runtime slices out each event's
encoding without parsing it, and writes the keys and lengths of a new batch the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import Message

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch


def _projection() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="civicmeter/core/event_encodings.proto",
        package="civicmeter.core.encodings",
        syntax="proto3",
    )
    batch = file.message_type.add(name="EventEncodings")
    batch.field.add(
        name="events",
        number=pb.UsageEventBatch.EVENTS_FIELD_NUMBER,
        type=FieldDescriptorProto.TYPE_BYTES,
        label=FieldDescriptorProto.LABEL_REPEATED,
    )
    pool = descriptor_pool.DescriptorPool()  # its own pool: nothing else sees this type
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("civicmeter.core.encodings.EventEncodings")
    )


_EventEncodings = _projection()


def split_events(batch: bytes) -> list[bytes]:
    """Each event's encoding in a UsageEventBatch (or PublishEventsRequest) encoding; other
    fields are skipped. Raises google.protobuf.message.DecodeError on a malformed one."""
    return list(_EventEncodings.FromString(batch).events)  # type: ignore[attr-defined]


def join_events(events: Sequence[bytes]) -> bytes:
    """The UsageEventBatch encoding of events' encodings, in order."""
    return bytes(_EventEncodings(events=events).SerializeToString())  # type: ignore[call-arg]


@dataclass(frozen=True)
class EncodedEvents:
    """A batch of events as encoded: the whole batch, and each event's encoding in it."""

    batch: bytes  # a UsageEventBatch's encoding
    events: list[bytes]

    @classmethod
    def of_batch(cls, batch: bytes) -> EncodedEvents:
        return cls(batch, split_events(batch))

    @classmethod
    def of_messages(cls, events: Sequence[pb.UsageEvent]) -> EncodedEvents:
        encodings = [event.SerializeToString() for event in events]
        return cls(encode_event_batch(encodings), encodings)
