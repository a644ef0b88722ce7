from datetime import timedelta

import pytest

from civicmeter.core.validation import TimeWindow, ValidationError, validate_event
from civicmeter.usage.v1 import usage_event_pb2 as pb
from tests.factories import NOW, event


def field_of(message: pb.UsageEvent) -> str:
    with pytest.raises(ValidationError) as info:
        validate_event(message, NOW)
    return info.value.field


def test_a_complete_event_is_valid() -> None:
    validate_event(event(), NOW)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"organization_id": ""}, "organization_id"),
        ({"department_id": "x" * 200}, "department_id"),
        ({"user_id": "kim@seoul.go.kr"}, "user_id"),
        ({"account_kind": pb.ACCOUNT_KIND_UNSPECIFIED}, "account_kind"),
        ({"provider_name": "OpenAI"}, "provider_name"),
        ({"operation_name": "chitchat"}, "operation_name"),
        ({"usage": pb.Usage()}, "usage"),
        ({"usage": pb.Usage(input_tokens=-5)}, "usage.input_tokens"),
        ({"usage": pb.Usage(images=1_000_001)}, "usage.images"),
        ({"purpose": "Not An Id"}, "purpose"),
    ],
)
def test_the_error_names_the_offending_field(changes: dict[str, object], field: str) -> None:
    assert field_of(event(**changes)) == field


def test_event_time_is_required() -> None:
    message = event()
    message.ClearField("event_time")
    assert field_of(message) == "event_time"


def test_events_too_far_in_the_future_or_past_are_refused() -> None:
    assert field_of(event(event_time=NOW + timedelta(minutes=6))) == "event_time"
    assert field_of(event(event_time=NOW - timedelta(days=401))) == "event_time"
    validate_event(event(event_time=NOW + timedelta(minutes=4)), NOW)


def test_the_time_window_is_configurable_for_replays() -> None:
    old = event(event_time=NOW - timedelta(days=900))
    validate_event(old, NOW, TimeWindow(max_age=timedelta(days=1000)))


def test_pii_finding_counts_are_checked() -> None:
    message = event()
    message.risk.pii_findings["kr_rrn"] = 2
    validate_event(message, NOW)
    message.risk.pii_findings["Bad Key"] = 1
    assert field_of(message).startswith("risk.pii_findings")


def test_reported_cost_needs_a_currency() -> None:
    message = event()
    message.reported_cost.units = 3
    assert field_of(message) == "reported_cost.currency_code"
