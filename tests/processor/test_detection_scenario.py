"""The labelled misuse scenario at a small size: every detector meets its target."""

import pytest

from civicmeter.policy.detectors import DETECTOR_NAMES
from loadtests.misuse.bench import TARGET, Run, run


@pytest.fixture(scope="module")
def small() -> Run:
    return run(scale=0.1, weeks=6, per_type=8, governments=("seoul", "busan", "chungnam"))


def test_every_kind_of_misuse_is_in_the_scenario(small: Run) -> None:
    scores = small.scores
    assert {name for name in DETECTOR_NAMES if scores[name].labels == 0} == set()
    assert small.scenario.redeliveries > 0
    assert small.scenario.legit_outside_office > 0
    assert small.repeats == small.scenario.redeliveries


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_precision_and_recall_meet_the_target(small: Run, detector: str) -> None:
    score = small.scores[detector]
    mismatches = [m for m in small.mismatches if m.alert_type == detector]
    assert score.precision >= TARGET, mismatches
    assert score.recall >= TARGET, mismatches


def test_the_scenario_and_the_alerts_are_deterministic() -> None:
    one, two = (run(scale=0.2, weeks=3, per_type=3, governments=("busan",)) for _ in range(2))
    assert one.scenario.labels == two.scenario.labels
    assert [e.event_id for e, _ in one.scenario.deliveries] == [
        e.event_id for e, _ in two.scenario.deliveries
    ]
    assert one.alerts == two.alerts
