"""The detection engine gives the same alerts and state however a stream is cut into batches,
and its ordinary path (what it works out once per batch and kind of event) gives exactly what
sending every event through every detector gives (engine.py, event_kinds.py)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.validation import EventColumns, TimeWindow, validate_batch
from civicmeter.core.pricing import PriceCatalog, load_catalog
from civicmeter.policy.organization import load_policies, parse_policies
from civicmeter.processor.detection import Alert, DetectionEngine, EngineLimits
from civicmeter.processor.detection.engine import USER_DETECTORS, SourceMark
from civicmeter.processor.detection.event_kinds import WorkingWindows, identity_of
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from loadtests.misuse.bench import FACTS
from loadtests.misuse.scenario import REPO, MisuseScenario, build_misuse_scenario
from loadtests.scenario import governments_of, load_facts
from tests.processor.test_pipeline_equivalence import batches

Batch = list[tuple[pb.UsageEvent, Decimal]]
RECORD = 40  # events per usage.raw record in the runs with sources
USER_A = "u_3f9a1c2e4b5d6f708192a3b4c5d6e7f8"


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
    state: bool = False,
    columns: bool = False,
    **options: Any,
) -> tuple[list[Alert], list[Any], dict[str, int]]:
    """The alerts, the day totals reported after each batch (and with `state`, the state
    written after each batch), and the state's sizes at the end. With `columns`, the engine
    reads the events' fields from validation's columns, as the processor hands them."""
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
        read = None
        if columns:
            events = [event for event, _ in deliveries[start:end]]
            read = validate_batch(events, -math.inf, math.inf, TimeWindow())[0]
        alerts.extend(engine.process(deliveries[start:end], marks, read))
        if options.get("activity_updates"):
            activity.extend(engine.take_activity())
        if state:
            activity.extend(engine.take_state())
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
    for sizes, columns in (([total], False), ([1], False), ([37, 500, 3], True), (None, True)):
        batches = cuts(total, sizes, 5)
        found = run(scenario, batches, columns=columns, **options)
        assert found[0] == alerts, sizes
        assert found[2] == expected[2], sizes  # the same state, entry for entry
        # The day totals reported after each batch depend on the batches, not on the path.
        assert found[1] == run(scenario, batches, reference=True, **options)[1], sizes


@pytest.mark.parametrize(("users", "departments"), [(100, 20_000), (20_000, 14), (110, 16)])
def test_the_same_alerts_and_state_when_the_state_is_full(
    scenario: MisuseScenario, users: int, departments: int
) -> None:
    """With room for fewer users or departments than the scenario has, least recently used
    state is evicted; the ordinary path leaves the maps in the order a lookup per event does,
    so the same entries go, and the same alerts and written state come out."""
    limits = EngineLimits(users=users, departments=departments, department_members=20)
    options: dict[str, Any] = {"limits": limits, "activity_updates": True}
    total = len(scenario.deliveries)
    records = [(start, min(total, start + RECORD)) for start in range(0, total, RECORD)]
    expected = run(scenario, records, reference=True, sources=True, state=True, **options)
    found = run(scenario, records, sources=True, state=True, **options)
    assert found == expected
    sizes = expected[2]
    assert sizes["users"] == min(users, sizes["users"]) and (
        sizes["users"] == users or sizes["departments"] == departments
    )  # something was evicted
    ordinary = DetectionEngine(scenario.policies, **options)
    for start, end in records:
        ordinary.process(scenario.deliveries[start:end])
    assert 0 < ordinary.ordinary_batches < len(records)  # both ways were taken


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


ZONES_POLICY: dict[str, Any] = {
    "version": "zones-1",
    "defaults": {
        "time_zone": "Asia/Seoul",
        "working_hours": {"start": "09:00", "end": "18:00", "grace_minutes": 45},
        "schedules": [
            {"name": "remote", "departments": ["it"], "start": "07:30", "end": "22:15"},
            {
                "name": "night",
                "users": ["u_night0000000000000000000000000"],
                "start": "22:00",
                "end": "06:30",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "holidays": True,
            },
        ],
    },
    "organizations": {
        "berlin": {"time_zone": "Europe/Berlin", "schedules": []},  # summer time
        "kathmandu": {"time_zone": "Asia/Kathmandu"},  # +05:45
        "stjohns": {"time_zone": "America/St_Johns"},  # -03:30, summer time
    },
}


@pytest.mark.parametrize("organization_id", ["seoul", "berlin", "kathmandu", "stjohns"])
def test_working_time_per_minute_is_off_hours_own_answer(organization_id: str) -> None:
    """WorkingWindows.covered, remembered per minute, is True exactly where off_hours finds
    the event in working time: across summer-time changes, offsets of 30 and 45 minutes,
    a zone's old local mean time (not whole minutes), nanoseconds that round up, and people
    with schedules of their own."""
    engine = DetectionEngine(parse_policies(ZONES_POLICY, "zones.yaml"))
    org = engine._organization(organization_id)
    working_time = org.policy.working_time
    windows = WorkingWindows()
    rng = random.Random(organization_id)
    starts = [
        datetime(2024, 3, 31, tzinfo=UTC),  # Europe's spring change
        datetime(2024, 10, 27, tzinfo=UTC),  # and autumn's
        datetime(2024, 3, 10, tzinfo=UTC),  # North America's
        datetime(2024, 5, 6, tzinfo=UTC),  # a Korean public holiday (Children's Day, moved)
        datetime(1905, 6, 1, tzinfo=UTC),  # local mean time in Seoul and Kathmandu
    ]
    people = [("it", USER_A), ("finance", USER_A), ("finance", "u_night0000000000000000000000000")]
    decided = 0  # events whose answer must be off_hours' own
    for start in starts:
        base = int(start.timestamp())
        for _ in range(1500):
            seconds = base + rng.randrange(0, 3 * 86_400)
            nanos = rng.choice([0, rng.randrange(1_000_000_000), 999_999_999])
            department, user = rng.choice(people)
            day, second, _ = org.local(seconds)
            local = datetime.fromtimestamp(int(seconds + nanos / 1e9), working_time.time_zone)
            in_working_time = working_time.off_hours(local, department, user) is None
            covered = windows.covered(
                working_time, organization_id, department, user, day, second, seconds, nanos
            )
            # Never covered where off_hours would fire; and off_hours' own answer unless the
            # float time rounds up to the next second (then the event takes the full path).
            assert not covered or in_working_time, (seconds, nanos, department, user)
            if int(seconds + nanos / 1e9) == seconds:
                assert covered == in_working_time, (seconds, nanos, department, user)
                decided += 1
    assert decided > 1500 * len(starts) / 2


class _CheckedEngine(DetectionEngine):
    """The engine, checking that each identity handed to it is the one its event holds."""

    calls = 0

    def process(
        self,
        batch: Sequence[tuple[pb.UsageEvent, Decimal]],
        sources: Sequence[SourceMark] = (),
        columns: EventColumns | None = None,
    ) -> list[Alert]:
        assert columns is not None
        events = [event for event, _ in batch]
        assert columns.identities == [identity_of(event) for event in events]
        assert columns.event_ids == [event.event_id for event in events]
        assert columns.seconds == [event.event_time.seconds for event in events]
        assert columns.nanos == [event.event_time.nanos for event in events]
        assert columns.quantities == [
            tuple(getattr(event.usage, name) for name in QUANTITIES) for event in events
        ]
        # Every event with risk signals is marked as one with rare fields.
        marked = zip(events, columns.rare, strict=True)
        assert all(rare for event, rare in marked if event.HasField("risk"))
        self.calls += 1
        return super().process(batch, sources, columns)


@settings(max_examples=120, deadline=None)
@given(batch=batches())
def test_the_processor_hands_the_engine_the_columns_of_each_accepted_event(
    batch: tuple[PriceCatalog, datetime, list[RawRecord]],
) -> None:
    """Over generated records of good and bad events (invalid, denied, late, unpriced,
    undecodable), the fields validation read come with the events, one for one."""
    prices, now, records = batch
    engine = _CheckedEngine(load_policies(REPO / "config" / "policies.yaml"))
    BatchProcessor(prices, "usage.raw", detection=engine).process(records, now)
    assert engine.calls == 1
