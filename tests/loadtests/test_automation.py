"""The automation benchmark simulates what it says (Poisson days in the office hours, scripts
at a period) and counts every simulated request through the detector."""

from __future__ import annotations

import itertools
import random

import pytest

from civicmeter.policy.organization import load_policies
from loadtests.misuse import automation
from loadtests.misuse.scenario import POLICIES


def test_a_small_run_passes_and_reports_every_band(capsys: pytest.CaptureFixture[str]) -> None:
    assert automation.main(["--user-days", "8", "--cases", "3", "--no-write"]) == 0
    out = capsys.readouterr().out
    for per_day in automation.BANDS:
        assert f"\n| {per_day} | 8 | " in out
    assert "| 0.5% | 1.000 |" in out  # a script alone, in a row: always caught


def test_poisson_days_have_the_asked_mean_inside_the_office_hours() -> None:
    rng = random.Random(1)
    days = [automation.human_day(rng, 100) for _ in range(200)]
    mean = sum(map(len, days)) / len(days)
    assert 97 <= mean <= 103  # 200 days: the standard error of the mean is 0.7
    moments = [t for day in days for t in day]
    assert min(moments) >= 9 * 3600 and max(moments) < 18 * 3600
    assert all(day == sorted(day) for day in days)


def test_a_script_run_keeps_its_period() -> None:
    run = automation.script_run(random.Random(3), 0.005)
    gaps = [b - a for a, b in itertools.pairwise(run)]
    assert 11 <= len(run) <= 16
    assert max(gaps) / min(gaps) < 1.05


def test_false_alerts_are_counted_per_band() -> None:
    feed = automation.Feed(load_policies(POLICIES).defaults)
    bands = automation.false_alerts(feed, seed=5, user_days=4)
    assert [b.user_days for b in bands] == [4] * len(automation.BANDS)
    # Every request of every simulated day went through the detector.
    assert feed.events == sum(b.events for b in bands)
    assert all(b.alerts == 0 for b in bands)
