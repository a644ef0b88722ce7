"""Activity records between the two detection agents: what the per-user engine reports comes
back the same from its record, records of the earlier protobuf form are still read, and a
record of a format this processor does not know is refused rather than misread."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from civicmeter.api.usage.v1 import activity_pb2
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.processor.app import ACTIVITY_RECORD_BYTES, _by_organization
from civicmeter.processor.detection import DetectionEngine
from civicmeter.processor.detection.day_activity import (
    VERSION,
    DayActivity,
    ServiceUse,
    decode,
    encode,
)
from civicmeter.processor.detection.engine import ORGANIZATION_DETECTORS, USER_DETECTORS
from tests.processor.test_durable_detection import POLICY, day_of


@pytest.fixture
def policies() -> PolicySet:
    return parse_policies(POLICY, "test.yaml")


def test_an_engines_updates_come_back_from_their_record(policies: PolicySet) -> None:
    engine = DetectionEngine(
        policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
    )
    engine.process(day_of("u1", 0, 3) + day_of("u1", 1, 2, service="claude"), [(0, 4, 17)])
    updates = engine.take_activity()
    assert [(u.day, u.requests, u.source_partition, u.source_offset) for u in updates] == [
        (updates[0].day, 3, 4, 17),
        (updates[0].day + 1, 2, 4, 17),
    ]
    # The sanctioned services used go with the user's last day.
    assert [s.service_id for s in updates[-1].services] == ["chatgpt", "claude"]
    assert updates[0].services == []
    assert decode(encode(updates)) == updates


def test_a_protobuf_record_of_the_earlier_format_is_read() -> None:
    update = activity_pb2.UserDayActivity(
        organization_id="org1",
        department_id="dept1",
        user_id="u1",
        requests=7,
        cost_krw="12.5",
        last_event_id="e7",
        source_partition=3,
        source_offset=41,
    )
    update.day.year, update.day.month, update.day.day = 2026, 3, 2
    update.last_event_time.seconds, update.last_event_time.nanos = 1_772_400_000, 500_000_000
    use = update.services.add(service_id="claude", provider_name="anthropic", first_event_id="e2")
    use.first_event_time.seconds = 1_772_399_000
    value = activity_pb2.UserDayActivityBatch(updates=[update]).SerializeToString()

    assert decode(value) == [
        DayActivity(
            "org1",
            "dept1",
            "u1",
            date(2026, 3, 2).toordinal(),
            7,
            "12.5",
            "e7",
            1_772_400_000.5,
            3,
            41,
            [ServiceUse("claude", "anthropic", 1_772_399_000.0, "e2")],
        )
    ]
    assert decode(b"") == []  # an empty batch


def test_a_record_of_an_unknown_format_is_refused() -> None:
    value = msgspec.msgpack.encode((VERSION + 1, [["anything", "else"]]))
    with pytest.raises(ValueError, match="format 2"):
        decode(value)


def test_the_organisation_engine_alerts_on_decoded_updates(policies: PolicySet) -> None:
    users = DetectionEngine(
        policies, detectors=USER_DETECTORS, fold_repeats=False, activity_updates=True
    )
    org = DetectionEngine(policies, detectors=ORGANIZATION_DETECTORS, fold_repeats=False)
    for day in range(5):
        users.process(day_of("u1", day, 5), [(0, 1, day)])
        org.apply_activity(decode(encode(users.take_activity())))
    users.process(day_of("u1", 5, 2, service="claude")[:1], [(0, 1, 5)])
    alerts = org.apply_activity(decode(encode(users.take_activity())))
    assert [a.alert_type for a in alerts] == ["new_service_in_department"]
    assert alerts[0].event_id == day_of("u1", 5, 1, service="claude")[0][0].event_id


def test_a_known_service_reported_earlier_moves_the_departments_first_use_back(
    policies: PolicySet,
) -> None:
    """The organisation side skips detect for a service its department knows; the first time
    it reports must still count, as detect would count it, for a later new service's warm-up
    (3 days in POLICY)."""
    day = date(2026, 3, 16).toordinal()
    monday = 1_773_619_200.0  # 2026-03-16 00:00 UTC

    def update(user: str, offset: int, seconds: float, service: str) -> DayActivity:
        use = ServiceUse(service, "openai", seconds, f"{user}-{offset}")
        return DayActivity(
            "seoul",
            "digital-policy",
            user,
            day,
            1,
            "1",
            f"{user}-{offset}",
            seconds,
            0,
            offset,
            [use],
        )

    def run(late_first_use: bool) -> list[str]:
        org = DetectionEngine(policies, detectors=ORGANIZATION_DETECTORS, fold_repeats=False)
        org.apply_activity([update("u1", 1, monday, "chatgpt")])  # the department is new
        if late_first_use:  # a late arrival: chatgpt used four days earlier
            org.apply_activity([update("u2", 1, monday - 4 * 86_400, "chatgpt")])
        alerts = org.apply_activity([update("u1", 2, monday + 3600, "claude")])
        return [a.alert_type for a in alerts]

    assert run(late_first_use=True) == ["new_service_in_department"]
    assert run(late_first_use=False) == []  # known for an hour only: still warming up


def test_a_backlogs_activity_goes_out_in_records_the_broker_takes() -> None:
    """Catching up, a processor publishes tens of thousands of users' days at once: each
    organisation's updates are cut into records of at most the bound, in order, keyed by it."""

    def update(n: int) -> DayActivity:
        return DayActivity(
            ("seoul", "busan")[n % 2], "dept1", f"u{n}", date(2026, 3, 1 + n % 28).toordinal(),
            n, f"{n}.5", f"e{n}", 1_772_400_000.0 + n, n % 12, n,
            [ServiceUse("chatgpt", "openai", 1_772_399_000.0, f"e{n}")] * (n % 3),
        )  # fmt: skip

    updates = [update(n) for n in range(30_000)]
    records = _by_organization(updates)
    assert max(len(value) for _, value in records) <= ACTIVITY_RECORD_BYTES
    assert len(records) > 2  # more than one a organisation
    for org in ("seoul", "busan"):
        sent = [u for key, value in records if key == org.encode() for u in decode(value)]
        assert sent == [u for u in updates if u.organization_id == org]
    small = _by_organization(updates[:3], most_bytes=1)  # one update a record at the least
    assert [(key, decode(value)) for key, value in small] == [
        (b"seoul", [updates[0]]), (b"seoul", [updates[2]]), (b"busan", [updates[1]])
    ]  # fmt: skip
