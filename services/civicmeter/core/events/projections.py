"""Some fields of every event of a UsageEventBatch encoding, cut out as bytes by the protobuf
runtime rather than read field by field in Python.

A projection is a batch type whose events declare only some fields of UsageEvent: parsing a
batch with it drops everything else, and encoding it again gives, per event, those fields in
canonical form (ordered by number, defaults left out). Equal bytes then mean equal fields, so
a value proven valid once is recognised by its bytes in later events and batches.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from google.protobuf.message import Message

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.encodings import split_events

_PACKAGE = "civicmeter.core.projection"


def projection(name: str, fields: Sequence[str]) -> tuple[type[Message], type[Message]]:
    """A batch type whose events declare only `fields` of UsageEvent, and that event type.
    Strings and messages are declared as bytes, enums as int32: the same wire form, read
    without checking UTF-8 or parsing the message again."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"civicmeter/core/projection_{name.lower()}.proto", package=_PACKAGE, syntax="proto3"
    )
    event = file.message_type.add(name=f"{name}Event")
    for field_name in fields:
        original = pb.UsageEvent.DESCRIPTOR.fields_by_name[field_name]
        kind = original.type
        if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            kind = FieldDescriptor.TYPE_BYTES
        elif kind == FieldDescriptor.TYPE_ENUM:
            kind = FieldDescriptor.TYPE_INT32
        event.field.add(
            name=field_name,
            number=original.number,
            type=kind,
            label=FieldDescriptorProto.LABEL_OPTIONAL,
        )
    batch = file.message_type.add(name=name)
    batch.field.add(
        name="events",
        number=pb.UsageEventBatch.EVENTS_FIELD_NUMBER,
        type=FieldDescriptorProto.TYPE_MESSAGE,
        label=FieldDescriptorProto.LABEL_REPEATED,
        type_name=f".{_PACKAGE}.{name}Event",
    )
    pool = descriptor_pool.DescriptorPool()  # its own pool: nothing else sees these types
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}Event")),
    )


def cut(batch_type: type[Message], batch: bytes) -> list[bytes]:
    """Each event's fields that `batch_type` (a projection) declares, as encoded (b"" for
    none)."""
    message = batch_type.FromString(batch)
    message.DiscardUnknownFields()
    return split_events(message.SerializeToString())
