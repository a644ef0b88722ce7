"""The detection engine gives the same alerts and state however a stream is cut into batches,
and its ordinary path (what it works out once per batch and kind of event) gives exactly what
sending every event through every detector gives (engine.py, event_kinds.py)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import load_catalog
from civicmeter.processor.detection import Alert, DetectionEngine
from civicmeter.processor.detection.engine import USER_DETECTORS, SourceMark
from loadtests.misuse.bench import FACTS
from loadtests.misuse.scenario import REPO, MisuseScenario, build_misuse_scenario
from loadtests.scenario import governments_of, load_facts

Batch = list[tuple[pb.UsageEvent, Decimal]]
RECORD = 40  # events per usage.raw record in the runs with sources


@pytest.fixture(scope="module")
def scenario() -> MisuseScenario:
    catalog = load_catalog(REPO / "config" / "prices.yaml")
    chosen = [g for g in governments_of(load_facts(FACTS)) if g.id in ("busan", "chungnam")]
    # Every kind of misuse, redeliveries, late arrivals, seat charges, several weeks.
    return build_misuse_scenario(chosen, catalog, scale=0.1, weeks=6, per_type=4, seed=11)


def cuts(total: int, sizes: Sequence[int] | None, seed: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive batches: of the given sizes in turn, or random ones."""
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    start, n = 0, 0
    while start < total:
        size = sizes[n % len(sizes)] if sizes else rng.randint(1, 700)
        out.append((start, min(total, start + size)))
        start, n = start + size, n + 1
    return out


def run(
    scenario: MisuseScenario,
    batches: list[tuple[int, int]],
    *,
    reference: bool = False,
    sources: bool = False,
    **options: Any,
) -> tuple[list[Alert], list[Any], dict[str, int]]:
    engine = DetectionEngine(scenario.policies, **options)
    engine._ordinary_path = not reference
    deliveries = scenario.deliveries
    alerts: list[Alert] = []
    activity: list[Any] = []
    for start, end in batches:
        marks: list[SourceMark] = []
        if sources:  # records of RECORD events, one offset each, on partition 0
            marks = [
                (i - start, 0, i // RECORD)
                for i in range(start, end)
                if i % RECORD == 0 or i == start
            ]
        alerts.extend(engine.process(deliveries[start:end], marks))
        if options.get("activity_updates"):
            activity.extend(engine.take_activity())
    return alerts, activity, engine.state_sizes()


@pytest.mark.parametrize(
    "options",
    [{}, {"detectors": USER_DETECTORS, "fold_repeats": False, "activity_updates": True}],
    ids=["all-detectors", "user-detectors"],
)
def test_the_same_alerts_however_the_stream_is_batched(
    scenario: MisuseScenario, options: dict[str, Any]
) -> None:
    total = len(scenario.deliveries)
    expected = run(scenario, cuts(total, [total], 0), reference=True, **options)
    alerts = expected[0]
    # The scenario raises alerts of every kind the engine runs, so all of them are compared.
    assert {a.alert_type for a in alerts} == set(options.get("detectors", USER_DETECTORS)) | (
        set() if options else {"peer_spike", "new_service_in_department"}
    )
    for sizes in ([total], [1], [37, 500, 3], None):
        batches = cuts(total, sizes, 5)
        found = run(scenario, batches, **options)
        assert found[0] == alerts, sizes
        assert found[2] == expected[2], sizes  # the same state, entry for entry
        # The day totals reported after each batch depend on the batches, not on the path.
        assert found[1] == run(scenario, batches, reference=True, **options)[1], sizes


def test_the_same_alerts_with_sources_however_records_are_batched(
    scenario: MisuseScenario,
) -> None:
    options: dict[str, Any] = {
        "detectors": USER_DETECTORS,
        "fold_repeats": False,
        "activity_updates": True,
    }
    total = len(scenario.deliveries)
    records = [(start, min(total, start + RECORD)) for start in range(0, total, RECORD)]
    expected = run(scenario, records, reference=True, sources=True, **options)
    assert expected[0]
    for per_batch in (1, 7, len(records)):
        batches = [
            (records[i][0], records[min(len(records), i + per_batch) - 1][1])
            for i in range(0, len(records), per_batch)
        ]
        found = run(scenario, batches, sources=True, **options)
        assert found[0] == expected[0], per_batch
        assert found[2] == expected[2], per_batch
        assert found[1] == run(scenario, batches, reference=True, sources=True, **options)[1]
