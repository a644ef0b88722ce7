"""Which events of an encoded UsageEventBatch carry the fields most events leave out (risk
signals, a reported cost, decision rule ids), found by the protobuf runtime in one go.

Asking each event (HasField) costs a call per event and field. Instead the batch's bytes are
parsed as a projection of UsageEventBatch that declares only those fields: everything else is
unknown to it and dropped, so an event without them becomes an empty message, and the
projection's size tells at once whether any event has one. The projection declares them as
bytes with explicit presence (proto2), so that a field set to an empty message still counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import Message

from civicmeter.api.usage.v1 import usage_event_pb2 as pb

RARE_FIELDS = ("risk", "reported_cost", "decision_rule_ids")


def _projection() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="civicmeter/core/rare_fields.proto", package="civicmeter.core.rare", syntax="proto2"
    )
    fields = file.message_type.add(name="RareFields")
    for name in RARE_FIELDS:
        original = pb.UsageEvent.DESCRIPTOR.fields_by_name[name]
        fields.field.add(
            name=name,
            number=original.number,
            type=FieldDescriptorProto.TYPE_BYTES,  # length-delimited, as the message or string
            label=FieldDescriptorProto.LABEL_REPEATED
            if original.is_repeated
            else FieldDescriptorProto.LABEL_OPTIONAL,
        )
    batch = file.message_type.add(name="RareFieldsBatch")
    batch.field.add(
        name="events",
        number=pb.UsageEventBatch.EVENTS_FIELD_NUMBER,
        type=FieldDescriptorProto.TYPE_MESSAGE,
        label=FieldDescriptorProto.LABEL_REPEATED,
        type_name=".civicmeter.core.rare.RareFields",
    )
    pool = descriptor_pool.DescriptorPool()  # its own pool: nothing else sees these types
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("civicmeter.core.rare.RareFieldsBatch")
    )


_RareFieldsBatch = _projection()
_EMPTY_EVENT_BYTES = 2  # an empty event in the projection: its key and a zero length


def events_with_rare_fields(encoded_batch: bytes) -> list[int]:
    """Indices of the events of a UsageEventBatch encoding that carry any of RARE_FIELDS."""
    projection = _RareFieldsBatch.FromString(encoded_batch)
    projection.DiscardUnknownFields()
    events: Sequence[Message] = projection.events  # type: ignore[attr-defined]
    if projection.ByteSize() == _EMPTY_EVENT_BYTES * len(events):
        return []
    return [i for i, event in enumerate(events) if event.ByteSize()]
