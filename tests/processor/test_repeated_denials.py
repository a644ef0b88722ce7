"""Repeated denials: a user whose requests the gateway guard keeps denying raises one alert."""

from datetime import timedelta
from decimal import Decimal

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.processor.detection import DetectionEngine
from tests.processor.test_detection import POLICY, kst, types, use

START = kst("2024-10-08 10:00")


@pytest.fixture
def policies() -> PolicySet:
    return parse_policies(POLICY, "test-policies.yaml")


def denied(
    minutes: float, user: str = "u_3f9a1c2e4b5d6f708192a3b4c5d6e7f8"
) -> tuple[pb.UsageEvent, Decimal]:
    event, cost = use(START + timedelta(minutes=minutes), user_id=user)
    event.decision = pb.DECISION_DENY
    event.decision_rule_ids.extend(["document.confidential"])
    return event, cost


def test_five_denials_within_ten_minutes_raise_one_alert(policies: PolicySet) -> None:
    engine = DetectionEngine(policies)
    four = engine.process([denied(m) for m in (0, 1, 2, 3)])
    assert "repeated_denials" not in types(four)
    fifth = engine.process([denied(4)])
    [alert] = [a for a in fifth if a.alert_type == "repeated_denials"]
    assert alert.severity == "high"
    assert alert.attributes["denials"] == "5"
    assert "document.confidential" in alert.explanation
    assert "차단" in alert.attributes["explanation_ko"]
    again = engine.process([denied(5), denied(6)])
    assert "repeated_denials" not in types(again)  # once a day per user


def test_denials_spread_out_or_allowed_requests_do_not_alert(policies: PolicySet) -> None:
    engine = DetectionEngine(policies)
    spread = engine.process([denied(m) for m in (0, 4, 8, 12, 16)])
    assert "repeated_denials" not in types(spread)
    allowed = [use(START + timedelta(minutes=m)) for m in range(10)]
    assert "repeated_denials" not in types(engine.process(allowed))
    others = [denied(m, user=f"u_{n:032x}") for n, m in enumerate(range(6))]
    assert "repeated_denials" not in types(engine.process(others))
