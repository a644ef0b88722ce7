from datetime import timedelta

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.validation import TimeWindow, ValidationError, validate_event
from tests.factories import NOW, event, user_id


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
        ({"user_id": "hong.gildong"}, "user_id"),
        ({"user_id": "홍길동"}, "user_id"),
        ({"user_id": "u_" + "A" * 32}, "user_id"),  # upper case: not the SDK's output
        ({"user_id": "u_" + "0" * 31}, "user_id"),
        ({"user_id": "u_" + "0" * 33}, "user_id"),
        ({"user_id": ""}, "user_id"),
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


def test_user_ids_of_the_sdk_are_valid_and_a_refusal_does_not_echo_the_name() -> None:
    validate_event(event(user_id=user_id("hong.gildong")), NOW)
    with pytest.raises(ValidationError) as info:
        validate_event(event(user_id="hong.gildong"), NOW)
    assert info.value.field == "user_id"
    assert "hong" not in info.value.message


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (10**12, 0, "event_time.seconds"),  # past year 9999: no text form to quote
        (-(10**12), 0, "event_time.seconds"),
        (int(NOW.timestamp()) - 3600, -1, "event_time.nanos"),
        (int(NOW.timestamp()) - 3600, 10**9, "event_time.nanos"),
        (int(NOW.timestamp()) - 3600, 2**31 - 1, "event_time.nanos"),
    ],
)
def test_an_event_time_outside_a_timestamp_is_named(seconds: int, nanos: int, field: str) -> None:
    message = event()
    message.event_time.seconds = seconds
    message.event_time.nanos = nanos
    assert field_of(message) == field


@pytest.mark.parametrize(
    ("units", "nanos", "field"),
    [(-1, 0, "reported_cost.units"), (0, -1, "reported_cost.nanos"),
     (0, 10**9, "reported_cost.nanos"), (1, 2**31 - 1, "reported_cost.nanos")],
)  # fmt: skip
def test_a_reported_cost_is_a_valid_money(units: int, nanos: int, field: str) -> None:
    message = event()
    message.reported_cost.currency_code = "USD"
    message.reported_cost.units = units
    message.reported_cost.nanos = nanos
    assert field_of(message) == field
    message.reported_cost.nanos = 999_999_999
    message.reported_cost.units = 2**63 - 1
    validate_event(message, NOW)


def test_an_event_names_at_most_64_kinds_of_personal_information() -> None:
    message = event()
    message.risk.pii_findings.update({f"kind-{n}": 1 for n in range(64)})
    validate_event(message, NOW)
    message.risk.pii_findings["one-more"] = 1
    assert field_of(message) == "risk.pii_findings"
