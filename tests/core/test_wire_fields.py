import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch, frame
from civicmeter.core.events.wire import length_delimited_fields
from tests.factories import event


def test_a_batch_splits_into_its_events_fields_whatever_their_lengths() -> None:
    # Lengths with one, two and three varint bytes.
    events = [pb.UsageEvent(event_id="a"), event(), event(purpose="p" * 60), event()]
    events[2].decision_rule_ids.extend(["rule-" + "r" * 100] * 200)
    encoded = [e.SerializeToString() for e in events]
    assert {len(e) < 128 for e in encoded} == {True, False}
    assert max(len(e) for e in encoded) >= 16_384
    fields = length_delimited_fields(encode_event_batch(encoded))
    assert fields == [frame(e) for e in encoded]
    # Each field is also a whole rated event's `event` field (field 1 of both messages).
    assert [pb.RatedUsageEvent.FromString(f).event for f in fields] == events


def test_an_empty_batch_has_no_fields() -> None:
    assert length_delimited_fields(b"") == []


def test_a_field_running_past_the_end_is_refused() -> None:
    whole = encode_event_batch([event()])
    with pytest.raises(ValueError, match="past the end"):
        length_delimited_fields(whole[:-1])
