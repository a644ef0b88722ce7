"""validate_batch: the rules of validate_event_at checked for many events at once."""

import math
from datetime import timedelta
from typing import Any

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.validation import (
    IDENTITY_FIELDS,
    TimeWindow,
    ValidationError,
    validate_batch,
    validate_event_at,
)
from tests.factories import NOW, event

WINDOW = TimeWindow()
EARLIEST = NOW.timestamp() - WINDOW.max_age.total_seconds()
LATEST = NOW.timestamp() + WINDOW.max_future.total_seconds()


def batch_of(*messages: pb.UsageEvent) -> Any:
    """The events as a decoded UsageEventBatch holds them."""
    return pb.UsageEventBatch(events=messages).events


def one_by_one(events: Any, earliest: float = EARLIEST, latest: float = LATEST) -> dict[int, str]:
    errors = {}
    for index, message in enumerate(events):
        try:
            validate_event_at(message, earliest, latest, WINDOW)
        except ValidationError as exc:
            errors[index] = str(exc)
    return errors


def no_time() -> pb.UsageEvent:
    message = event()
    message.ClearField("event_time")
    return message


def with_risk(**findings: int) -> pb.UsageEvent:
    message = event()
    message.risk.pii_findings.update(findings)
    return message


def with_rules(*rules: str) -> pb.UsageEvent:
    message = event()
    message.decision_rule_ids.extend(rules)
    return message


def with_reported_cost(currency: str, units: int) -> pb.UsageEvent:
    message = event()
    message.reported_cost.currency_code = currency
    message.reported_cost.units = units
    return message


BAD = {
    "event_id": event(event_id="has space"),
    "empty event_id": event(event_id=""),
    "event_id with a line break": event(event_id="evt\n1"),
    "no event_time": no_time(),
    "future": event(event_time=NOW + timedelta(hours=1)),
    "too old": event(event_time=NOW - timedelta(days=500)),
    "gateway_id": event(gateway_id="gw 1"),
    "organization_id": event(organization_id=""),
    "user_id": event(user_id="kim@seoul.go.kr"),
    "account_kind": event(account_kind=pb.ACCOUNT_KIND_UNSPECIFIED),
    "provider_name": event(provider_name="OpenAI"),
    "request_model": event(request_model="bad model!"),
    "operation_name": event(operation_name="chitchat"),
    "no usage": event(usage=pb.Usage()),
    "negative usage": event(usage=pb.Usage(input_tokens=-5)),
    "images": event(usage=pb.Usage(images=1_001)),
    "seat_months": event(usage=pb.Usage(seat_months=10_001, input_tokens=5)),
    "characters": event(usage=pb.Usage(characters=100_000_001)),
    "purpose": event(purpose="Not An Id"),
    "decision": event(decision=9),
    "pii count": with_risk(rrn=100_001),
    "pii kind": with_risk(**{"Bad Kind": 1}),
    "rule id": with_rules("Bad Rule"),
    "rule ids": with_rules(*(f"rule-{i}" for i in range(33))),
    "currency": with_reported_cost("won", 5),
    "reported units": with_reported_cost("KRW", -1),
    "empty reported cost": with_reported_cost("", 0),
}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_a_bad_event_among_good_ones_gets_exactly_its_one_by_one_error(bad: pb.UsageEvent) -> None:
    events = batch_of(event(), bad, event())
    _, errors = validate_batch(events, EARLIEST, LATEST, WINDOW)
    assert {i: str(e) for i, e in errors.items()} == one_by_one(events)
    assert set(errors) == {1}


def test_every_error_of_a_batch_of_bad_events_is_the_one_by_one_error() -> None:
    events = batch_of(*BAD.values(), event(), *BAD.values())
    _, errors = validate_batch(events, EARLIEST, LATEST, WINDOW)
    expected = one_by_one(events)
    assert {i: str(e) for i, e in errors.items()} == expected
    assert len(expected) == 2 * len(BAD)


def test_the_batch_encoding_finds_the_same_errors() -> None:
    """Given the batch's encoding, rare fields are looked for in it: the errors stay the same."""
    batch = pb.UsageEventBatch(events=[*BAD.values(), event(), *BAD.values()])
    _, errors = validate_batch(batch.events, EARLIEST, LATEST, WINDOW, batch.SerializeToString())
    assert {i: str(e) for i, e in errors.items()} == one_by_one(batch.events)


def test_rare_fields_that_pass_their_rules_are_valid() -> None:
    events = batch_of(
        with_risk(rrn=2, phone=1), with_rules("rule-1"), with_reported_cost("USD", 3), event()
    )
    assert validate_batch(events, EARLIEST, LATEST, WINDOW)[1] == {}


def test_an_event_without_a_time_is_refused_when_the_window_has_no_start() -> None:
    """Second 0 is inside an unbounded window: the missing time must be noticed on its own."""
    events = batch_of(event(), no_time())
    _, errors = validate_batch(events, -math.inf, math.inf, WINDOW)
    assert {i: str(e) for i, e in errors.items()} == {1: "event_time: is required"}


def test_an_invalid_identity_stays_invalid_in_later_batches() -> None:
    bad = event(department_id="x" * 200)
    for _ in range(2):
        _, errors = validate_batch(batch_of(bad), EARLIEST, LATEST, WINDOW)
        assert [e.field for e in errors.values()] == ["department_id"]


def test_the_columns_hold_each_events_fields_in_order() -> None:
    a = event(usage=pb.Usage(input_tokens=7, requests=1))
    b = event(
        organization_id="busan",
        usage=pb.Usage(seat_months=1),
        event_time=NOW - timedelta(minutes=5, microseconds=250_001),
    )
    assert b.event_time.nanos  # a time with a fraction of a second
    columns, _ = validate_batch(batch_of(a, b), EARLIEST, LATEST, WINDOW)
    assert columns.seconds == [a.event_time.seconds, b.event_time.seconds]
    assert [identity[1] for identity in columns.identities] == ["seoul", "busan"]
    assert [dict(zip(QUANTITIES, q, strict=True)) for q in columns.quantities] == [
        {name: getattr(m.usage, name) for name in QUANTITIES} for m in (a, b)
    ]
    assert columns.event_ids == [a.event_id, b.event_id]
    assert columns.nanos == [a.event_time.nanos, b.event_time.nanos]


def test_events_of_one_identity_share_one_tuple_across_batches() -> None:
    """Caches keyed by identity downstream then find it without comparing its strings."""
    a, b, bad = event(), event(), event(department_id="x" * 200)
    first, errors = validate_batch(batch_of(a, bad, b), EARLIEST, LATEST, WINDOW)
    later, _ = validate_batch(batch_of(event()), EARLIEST, LATEST, WINDOW)
    assert list(errors) == [1]
    assert first.identities[0] is first.identities[2] is later.identities[0]
    assert first.identities == [
        tuple(getattr(m, name) for name in IDENTITY_FIELDS) for m in (a, bad, b)
    ]


def test_the_columns_mark_the_events_with_rare_fields() -> None:
    """From the batch's encoding, only the events with rare fields; without it, every one
    (each may have one)."""
    plain = event()
    events = batch_of(plain, with_risk(phone=1), with_rules("no-pii"), with_reported_cost("USD", 1))
    encoded = pb.UsageEventBatch(events=events).SerializeToString()
    columns, _ = validate_batch(events, EARLIEST, LATEST, WINDOW, encoded)
    assert columns.rare == [False, True, True, True]
    columns, _ = validate_batch(events, EARLIEST, LATEST, WINDOW)
    assert columns.rare == [True] * 4
