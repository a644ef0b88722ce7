"""Detection spread over processors and restarted from its state records: the same alerts as
one engine that never stops, no baseline warming up again, no record counted twice."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import load_catalog
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.processor.detection import Alert, DetectionEngine
from civicmeter.processor.detection.engine import ORGANIZATION_DETECTORS, USER_DETECTORS
from civicmeter.processor.detection.state import StateRecord, parse
from loadtests.misuse.bench import FACTS, TARGET
from loadtests.misuse.partitioned import run_partitioned
from loadtests.misuse.scenario import REPO, MisuseScenario, build_misuse_scenario
from loadtests.misuse.scoring import score
from loadtests.scenario import governments_of, load_facts

POLICY = {
    "version": "t1",
    "defaults": {
        "sanctioned_services": ["chatgpt", "openai-api", "claude"],
        "detectors": {"new_service_in_department": {"warmup_days": 3}},
    },
}
START = datetime(2026, 3, 9, 1, 0, tzinfo=UTC)  # a Monday, 10:00 in Seoul


@pytest.fixture(scope="module")
def scenario() -> MisuseScenario:
    governments = [
        g for g in governments_of(load_facts(FACTS)) if g.id in ("seoul", "busan", "chungnam")
    ]
    catalog = load_catalog(REPO / "config" / "prices.yaml")
    return build_misuse_scenario(governments, catalog, scale=0.1, weeks=6, per_type=8)


def first_of_each_key(alerts: Sequence[Alert]) -> list[Alert]:
    """As the sink stores them: one alert per dedup key, its first occurrence."""
    first: dict[str, Alert] = {}
    for alert in alerts:
        first.setdefault(alert.dedup_key, alert)
    return list(first.values())


@pytest.mark.parametrize(
    ("processors", "crash_at"), [(1, None), (3, None), (3, 0.6)], ids=["one", "three", "crash"]
)
def test_alerts_do_not_depend_on_processors_or_crashes(
    scenario: MisuseScenario, processors: int, crash_at: float | None
) -> None:
    engine = DetectionEngine(scenario.policies, fold_repeats=False)
    reference: list[Alert] = []
    for start in range(0, len(scenario.deliveries), 500):
        reference.extend(engine.process(scenario.deliveries[start : start + 500]))

    alerts = run_partitioned(scenario.policies, scenario.deliveries, processors, crash_at=crash_at)

    assert {a.dedup_key for a in alerts} == {a.dedup_key for a in reference}
    scores, mismatches = score(first_of_each_key(alerts), scenario.labels)
    assert {a.alert_type for a in alerts} >= set(ORGANIZATION_DETECTORS)
    for name, s in scores.items():
        assert s.precision >= TARGET and s.recall >= TARGET, (name, mismatches)


@pytest.fixture
def policies() -> PolicySet:
    return parse_policies(POLICY, "test.yaml")


def request(user: str, when: datetime, n: int, service: str) -> pb.UsageEvent:
    event = pb.UsageEvent(
        event_id=f"{user}-{when:%Y%m%d%H%M%S}-{n}",
        organization_id="seoul",
        department_id="digital-policy",
        user_id=user,
        provider_name="openai",
        service_id=service,
        operation_name="chat",
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
    )
    event.event_time.FromDatetime(when)
    return event


def day_of(
    user: str, day: int, count: int, service: str = "chatgpt"
) -> list[tuple[pb.UsageEvent, Decimal]]:
    """`count` requests at random times of office hours on weekday `day` (0: START's Monday)."""
    base = START + timedelta(days=day + 2 * (day // 5))  # skip weekends
    rng = random.Random(f"{user}/{day}")
    seconds = sorted(rng.uniform(0, 7 * 3600) for _ in range(count))
    return [
        (request(user, base + timedelta(seconds=s), i, service), Decimal(1))
        for i, s in enumerate(seconds)
    ]


def user_engine(policies: PolicySet) -> DetectionEngine:
    return DetectionEngine(
        policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
    )


def restored(policies: PolicySet, records: Sequence[StateRecord]) -> DetectionEngine:
    engine = user_engine(policies)
    for record in records:  # through bytes, as the state topic holds them
        engine.restore(parse(record.key, record.value))
    return engine


def test_a_restored_baseline_does_not_warm_up_again(policies: PolicySet) -> None:
    first = user_engine(policies)
    offset = 0
    for day in range(10):
        assert first.process(day_of("u1", day, 20), [(0, 2, offset)]) == []
        offset += 1
    state = first.take_state()
    assert [r.partition for r in state] == [2]

    second = restored(policies, state)
    spike = second.process(day_of("u1", 10, 200), [(0, 2, offset)])
    assert [a.alert_type for a in spike] == ["volume_spike"]
    assert spike[0].attributes["baseline_days"] == "10"
    # Without the state the same day raises nothing: the baseline would be warming up.
    assert user_engine(policies).process(day_of("u1", 10, 200), [(0, 2, offset)]) == []


def test_a_replayed_record_is_not_counted_again(policies: PolicySet) -> None:
    engine = user_engine(policies)
    morning = day_of("u1", 0, 30)
    engine.process(morning[:10], [(0, 0, 0)])
    engine.process(morning[10:20], [(0, 0, 1)])
    state = engine.take_state()
    engine.take_activity()

    again = restored(policies, state)
    # A crash after the state was written but before the offsets were committed: the
    # micro-batch comes again, with the next record, in one batch.
    again.process(morning[:30], [(0, 0, 0), (10, 0, 1), (20, 0, 2)])
    (update,) = again.take_activity()
    assert update.requests == 30  # 10 + 10 restored, 10 new; the replayed 20 not again
    assert (update.source_partition, update.source_offset) == (0, 2)
    assert again.replayed == 20


def test_organisation_detectors_take_absolute_totals_once(policies: PolicySet) -> None:
    users = user_engine(policies)
    org = DetectionEngine(policies, detectors=ORGANIZATION_DETECTORS, fold_repeats=False)
    offset = 0
    for day in range(5):
        users.process(day_of("u1", day, 5), [(0, 1, offset)])
        offset += 1
        org.apply_activity(users.take_activity())
    users.process(day_of("u1", 5, 2, service="claude")[:1], [(0, 1, offset)])
    updates = users.take_activity()
    alerts = org.apply_activity(updates)
    assert [a.alert_type for a in alerts] == ["new_service_in_department"]
    assert alerts[0].event_id == day_of("u1", 5, 1, service="claude")[0][0].event_id

    # The same updates again (a replay) and an older one change nothing.
    replay = DetectionEngine(policies, detectors=ORGANIZATION_DETECTORS, fold_repeats=False)
    for record in org.take_state():
        replay.restore(parse(record.key, record.value))
    assert replay.apply_activity(updates) == []
    stale = msgspec.structs.replace(updates[0], source_offset=0, requests=999)
    replay.apply_activity([stale])
    assert replay.replayed == 1
    (state,) = (r for r in replay.take_state() if r.kind == "u")
    assert state.values["activity"][2] == 1  # the day's requests: still the newer total


def test_a_redelivered_event_is_recognised_after_a_restart(policies: PolicySet) -> None:
    engine = user_engine(policies)
    morning = day_of("u1", 0, 10)
    engine.process(morning, [(0, 0, 0)])
    engine.take_activity()

    again = restored(policies, engine.take_state())
    # The gateway sent the last request again: a new record, the same event id.
    again.process([morning[-1], *day_of("u1", 0, 12)[10:]], [(0, 0, 1)])
    (update,) = again.take_activity()
    assert update.requests == 12
    assert again.repeats == 1
