from hypothesis import given
from hypothesis import strategies as st

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.wire import length_delimited, tag, varint, varint_field


# Non-default values: proto3 writes no field for an empty string or a zero.
@given(st.text(min_size=1, max_size=600), st.integers(min_value=1, max_value=2**63 - 1))
def test_hand_written_fields_decode_as_protobuf_writes_them(text: str, tokens: int) -> None:
    usage = varint_field(1, tokens)
    encoded = length_delimited(tag(1), text.encode()) + length_delimited(tag(12), usage)
    expected = pb.UsageEvent(event_id=text, usage=pb.Usage(input_tokens=tokens))
    assert pb.UsageEvent.FromString(encoded) == expected
    assert encoded == expected.SerializeToString()


def test_varint_lengths_cross_the_one_byte_boundary() -> None:
    assert [len(varint(n)) for n in (0, 127, 128, 16_383, 16_384)] == [1, 1, 2, 2, 3]
