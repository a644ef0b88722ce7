"""validate_batch given the batch's encoding, as the processor calls it (the record decoded,
its unknown fields dropped and encoded again): identities and usages are recognised by their
encodings, and every error and column must stay what one-by-one validation and reading the
messages give."""

import random
from typing import Any

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events import validation
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.rare_fields import events_with_rare_fields
from civicmeter.core.events.validation import IDENTITY_FIELDS, EventColumns, validate_batch
from tests.core.test_validation_batch import BAD, EARLIEST, LATEST, WINDOW, one_by_one
from tests.factories import event

# Valid events of several identities and usages, as a partition's records mix them.
GOOD = [
    event(),
    event(organization_id="busan", user_id="u_" + "a" * 32),
    event(department_id="welfare", request_model=""),
    event(provider_name="anthropic", service_id="claude-api", request_model="claude-sonnet-4"),
    event(purpose="administrative-work", decision=pb.DECISION_DENY),
    event(usage=pb.Usage(seat_months=1), operation_name="subscription", request_model=""),
    event(usage=pb.Usage(images=3, requests=1), operation_name="image_generation"),
    event(usage=pb.Usage(input_tokens=10_000_000, reasoning_tokens=9)),
    event(account_kind=pb.ACCOUNT_KIND_PERSONAL),
]


@pytest.fixture(autouse=True)
def _forget() -> None:
    """Each test starts with nothing proven (a valid identity found earlier must not hide a
    rule broken here)."""
    validation._identity_by_encoding.clear()
    validation._quantities_by_encoding.clear()
    validation._valid_identities.clear()


def as_processor(messages: list[pb.UsageEvent]) -> tuple[list[pb.UsageEvent], bytes]:
    """The events and the encoding BatchProcessor.process hands to validate_batch."""
    record = pb.UsageEventBatch(events=messages).SerializeToString()
    decoded = pb.UsageEventBatch.FromString(record)
    events = list(decoded.events)
    decoded.DiscardUnknownFields()
    return events, decoded.SerializeToString()


def read(events: list[pb.UsageEvent]) -> dict[str, Any]:
    """The columns as read field by field from the messages."""
    return {
        "identities": [tuple(getattr(m, name) for name in IDENTITY_FIELDS) for m in events],
        "quantities": [tuple(getattr(m.usage, name) for name in QUANTITIES) for m in events],
        "seconds": [m.event_time.seconds for m in events],
        "nanos": [m.event_time.nanos for m in events],
        "event_ids": [m.event_id for m in events],
    }


def columns_of(columns: EventColumns) -> dict[str, Any]:
    return {name: getattr(columns, name) for name in read([])}


def check(messages: list[pb.UsageEvent]) -> EventColumns:
    """The encoded path against one by one and against the messages; its columns."""
    events, encoded = as_processor(messages)
    columns, errors = validate_batch(events, EARLIEST, LATEST, WINDOW, encoded)
    assert {i: str(e) for i, e in errors.items()} == one_by_one(events)
    assert columns_of(columns) == read(events)
    rare = set(events_with_rare_fields(encoded))
    assert columns.rare == [i in rare for i in range(len(events))]
    return columns


def test_a_valid_batch_has_no_errors_and_its_columns_read_from_the_messages() -> None:
    for _ in range(2):  # the second time, every identity and usage is already proven
        columns = check(GOOD * 3)
        assert len(columns.identities) == 3 * len(GOOD)


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_a_bad_event_among_good_ones_gets_exactly_its_one_by_one_error(bad: pb.UsageEvent) -> None:
    check([*GOOD, bad, *GOOD])
    # Its identity and usage proven by the good events first: the rule must still refuse it.
    check([bad, *GOOD])


def test_a_batch_of_bad_events_only() -> None:
    check(list(BAD.values()))
    check(list(BAD.values()))


def test_an_identity_refused_for_another_field_is_not_proven() -> None:
    """The first event of an identity fails on its id: the identity is proven by a later one,
    and a later invalid identity stays invalid."""
    bad_id, good = event(event_id="has space"), event()
    check([bad_id, good, event(gateway_id="gw 1"), event(gateway_id="gw 1")])
    check([event(gateway_id="gw 1"), good])


def test_events_of_one_identity_share_one_tuple_with_the_read_path() -> None:
    """Downstream caches keyed by identity find it without comparing its strings, whichever
    path proved it."""
    events, encoded = as_processor([event(), event()])
    read_columns, _ = validate_batch(events, EARLIEST, LATEST, WINDOW)
    encoded_columns, _ = validate_batch(events, EARLIEST, LATEST, WINDOW, encoded)
    again, _ = validate_batch(*as_processor([event()])[:1], EARLIEST, LATEST, WINDOW)
    shared = read_columns.identities[0]
    assert encoded_columns.identities[0] is shared
    assert encoded_columns.identities[1] is shared
    assert again.identities[0] is shared


def test_an_empty_batch() -> None:
    columns, errors = validate_batch([], EARLIEST, LATEST, WINDOW, b"")
    assert errors == {}
    assert columns_of(columns) == read([])


def mutated(rng: random.Random) -> pb.UsageEvent:
    """A good event, a bad one, or a good one with one of a bad one's fields."""
    choice = rng.random()
    if choice < 0.6:
        message = pb.UsageEvent()
        message.CopyFrom(rng.choice(GOOD))
        message.event_id = f"evt-r{rng.randrange(10**9)}"
        if rng.random() < 0.5:  # token counts of their own, as API calls have
            message.usage.input_tokens = rng.randint(0, 10_000_001)
        return message
    return rng.choice(list(BAD.values()))


@pytest.mark.parametrize("limit", [2, 200_000])
def test_random_batches_match_one_by_one_while_the_memory_fills_and_is_forgotten(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validation, "_VALID_IDENTITIES_LIMIT", limit)
    monkeypatch.setattr(validation, "_USAGES_LIMIT", limit)
    rng = random.Random(limit)
    for _ in range(150):
        messages = [mutated(rng) for _ in range(rng.randint(1, 30))]  # at most 30
        check(messages)
        # Forgotten when full: at most the limit, or one batch's new usages.
        assert len(validation._identity_by_encoding) <= limit
        assert len(validation._quantities_by_encoding) <= max(limit, 30)
