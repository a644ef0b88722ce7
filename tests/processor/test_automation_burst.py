"""automation_burst: N gaps in a row this alike, or a chain too exact to be chance."""

from __future__ import annotations

import random
from collections import deque
from datetime import timedelta
from decimal import Decimal

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.detectors import AutomationBurstSettings
from civicmeter.policy.organization import parse_policies
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.detectors.automation_burst import (
    AutomationBurstDetector,
    Recent,
)
from tests.processor.test_detection import POLICY, kst, types, use

START = kst("2024-09-20T10:00")


@pytest.fixture
def engine() -> DetectionEngine:
    return DetectionEngine(parse_policies(POLICY, "test-policies.yaml"))


def requests(seconds: list[float], user: str = "u_a") -> list[tuple[pb.UsageEvent, Decimal]]:
    return [use(START + timedelta(seconds=s), user_id=user) for s in sorted(seconds)]


# Eleven requests about two minutes apart: gaps varying by up to 8% (variation 5.4%).
BEATS = [0.0, 121, 236, 362, 478, 601, 716, 842, 958, 1081, 1196]


def test_ten_gaps_in_a_row_this_alike_raise_an_alert(engine: DetectionEngine) -> None:
    alerts = engine.process(requests(BEATS))
    assert types(alerts) == ["automation_burst"]
    attributes = alerts[0].attributes
    assert (attributes["pattern"], attributes["requests_in_between"]) == ("regular", "0")
    assert float(attributes["interval_cv"]) <= 0.1
    assert "11 requests in a row" in alerts[0].explanation


def test_gaps_less_alike_than_the_policy_allows_raise_nothing(engine: DetectionEngine) -> None:
    # The same rhythm with one gap 40% long: variation 13%, over max_interval_cv 10%.
    uneven = [*BEATS[:5], *(t + 48 for t in BEATS[5:])]
    assert engine.process(requests(uneven)) == []


def test_a_loose_chain_picked_out_of_a_persons_requests_is_not_a_script(
    engine: DetectionEngine,
) -> None:
    # The same eleven requests with eight more of the person's in between: a chain this loose
    # (up to 8% off the period) among this many requests is what chance produces; the former
    # search, which skipped up to eight requests, called it a script.
    others = [30.0, 200, 250, 520, 700, 880, 1010, 1150]
    assert engine.process(requests(BEATS + others)) == []


def test_an_exact_script_among_the_persons_own_requests_is_caught(
    engine: DetectionEngine,
) -> None:
    rng = random.Random(7)
    script = requests([300.0 * i + rng.uniform(-0.5, 0.5) for i in range(12)])
    # Twenty of the person's own requests over the script's hour: more than one a beat.
    own = requests([rng.uniform(0, 3300) for _ in range(20)])
    alerts = engine.process(sorted(script + own, key=lambda e: e[0].event_time.ToNanoseconds()))
    assert types(alerts) == ["automation_burst"]
    alert = alerts[0]
    assert alert.attributes["pattern"] == "regular"
    assert int(alert.attributes["requests_in_between"]) >= 10
    assert float(alert.attributes["chance"]) <= 1e-9
    assert "in between: a script running while they work" in alert.explanation
    assert alert.event_id == script[10][0].event_id  # the eleventh request of the script


@pytest.mark.parametrize("per_day", [80, 150, 300])
def test_random_human_traffic_raises_nothing(engine: DetectionEngine, per_day: int) -> None:
    # 120 user-days of random requests over the office hours; the former chain search flagged
    # about 1% of such days at these rates.
    for day in range(120):
        rng = random.Random(f"{per_day}/{day}")
        seconds = [rng.uniform(0, 9 * 3600) for _ in range(per_day)]
        assert engine.process(requests(seconds, user=f"u_{per_day}_{day}")) == []


@pytest.mark.parametrize(("max_requests", "intervals"), [(12, 10), (3, 10), (20, 4)])
def test_fewer_requests_than_either_rule_needs_find_nothing(
    max_requests: int, intervals: int
) -> None:
    """The engine asks for a finding only from least_requests on: one fewer finds nothing,
    and that many can (here evenly spaced, a second apart)."""
    settings = AutomationBurstSettings(max_requests=max_requests, regular_intervals=intervals)
    least = AutomationBurstDetector.least_requests(settings)
    size = AutomationBurstDetector.window_size(settings)
    times = [1_700_000_000.0 + i for i in range(least)]
    assert AutomationBurstDetector.finding(Recent(deque(times[:-1], maxlen=size)), settings) is None
    assert AutomationBurstDetector.finding(Recent(deque(times, maxlen=size)), settings) is not None
