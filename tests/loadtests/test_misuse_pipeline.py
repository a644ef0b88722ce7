"""The labelled misuse scenario through the real pipeline three ways, in small: one processor,
three, and three with one SIGKILLed and restarted. The same alerts each way (by dedup key),
every detector at its target in each."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.misuse.bench import TARGET
from loadtests.misuse.pipeline import WAYS, Outcome, build, run_way

pytestmark = pytest.mark.kafka


def test_alerts_are_the_same_whatever_the_processors_and_a_crash(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    scenario = build(0.08, 4, 4, ("seoul", "busan", "chungnam"))
    outcomes: list[Outcome] = []
    for name in ("one", "three", "kill"):
        outcomes.append(
            run_way(
                scenario,
                WAYS[name],
                tmp_path / name,
                rate=3_000,
                settle_seconds=6,
                kafka_bootstrap=kafka_bootstrap,
            )
        )
    one, three, killed = outcomes
    assert killed.way.kill_at is not None and killed.way.processors == 3
    assert one.keys, "no alerts at all"
    assert three.keys == one.keys, sorted(three.keys ^ one.keys)
    assert killed.keys == one.keys, sorted(killed.keys ^ one.keys)
    for outcome in outcomes:
        for name, s in outcome.scores.items():
            assert s.labels > 0, f"no {name} case in the scenario"
            assert s.precision >= TARGET and s.recall >= TARGET, (
                outcome.way.name,
                name,
                outcome.mismatches,
            )
