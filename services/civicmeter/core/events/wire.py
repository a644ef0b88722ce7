"""Protobuf fields written by hand, for messages assembled around bytes already encoded
(a rated event around the event as received, a load generator's templates). Concatenated
protobuf fields form a valid message: the last scalar wins and sub-messages merge."""

from __future__ import annotations


def tag(field_number: int) -> bytes:
    """The key of a length-delimited field (wire type 2); one byte for fields 1 to 15."""
    if not 1 <= field_number <= 15:
        raise ValueError("only fields 1 to 15 have one-byte keys")
    return bytes([field_number << 3 | 2])


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(field_number: int, value: int) -> bytes:
    """A whole varint field (wire type 0): a bool, an enum or an integer."""
    if not 1 <= field_number <= 15:
        raise ValueError("only fields 1 to 15 have one-byte keys")
    return bytes([field_number << 3]) + varint(value)


# One-byte lengths, the common case of the hot loops (ids, costs, versions, small events).
_SHORT = tuple(bytes((n,)) for n in range(128))


def length_delimited(key: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return key + (_SHORT[size] if size < 128 else varint(size)) + payload


def length_delimited_fields(buffer: bytes) -> list[bytes]:
    """Each field of a message made of length-delimited fields with one-byte keys (a batch
    record's events), as encoded: key, length and payload."""
    fields = []
    position, end = 0, len(buffer)
    while position < end:
        start = position
        size, shift, position = 0, 0, position + 1
        while True:  # the length, a varint
            byte = buffer[position]
            position += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        position += size
        if position > end:
            raise ValueError("a field runs past the end of the message")
        fields.append(buffer[start:position])
    return fields
