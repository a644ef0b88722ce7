"""The protobuf schema ClickHouse needs to parse civicmeter's records itself.

ClickHouse reads `FORMAT ProtobufList` given the message's .proto text (`format_schema_source =
'string'`), which must stand alone: no imports. The text is written here from the generated
descriptors, so it always matches the wire contract in proto/: every message the root reaches
(google.protobuf.Timestamp, google.type.Money included) becomes a local message with the same
field numbers and wire types; enums become int32 (the same varint on the wire).
"""

from __future__ import annotations

from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_ENUM: "int32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


@cache
def standalone_schema(root: Descriptor) -> str:
    """proto3 text defining `root` (under its own name) and every message it reaches."""
    names: dict[str, str] = {}
    order: list[Descriptor] = []

    def visit(message: Descriptor) -> str:
        if message.full_name not in names:
            names[message.full_name] = f"M{len(names)}_{message.name}"
            order.append(message)
            for field in message.fields:
                if field.message_type is not None and not _is_map(field):
                    visit(field.message_type)
        return names[message.full_name]

    visit(root)
    names[root.full_name] = root.name
    blocks = [_message(m, names) for m in order]
    return 'syntax = "proto3";\n' + "\n".join(blocks)


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def _message(message: Descriptor, names: dict[str, str]) -> str:
    lines = [f"message {names[message.full_name]} {{"]
    for field in message.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            kind = f"map<{_type(key, names)}, {_type(value, names)}>"
        else:
            repeated = "repeated " if field.is_repeated else ""
            kind = repeated + _type(field, names)
        lines.append(f"  {kind} {field.name} = {field.number};")
    lines.append("}")
    return "\n".join(lines)


def _type(field: FieldDescriptor, names: dict[str, str]) -> str:
    if field.message_type is not None:
        return names[field.message_type.full_name]
    return _SCALARS[field.type]
