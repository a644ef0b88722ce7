"""What the detection engine works out once per kind of event rather than once per event.

Most events are ordinary: a sanctioned service, an allowed account kind, not banned, not
denied, no risk finding, in working time. For those, no service- or account-level detector
can fire, and only the per-user state (activity, bursts, baselines, peers, services seen)
changes. `EventKind` says, for every event sharing an organisation, provider, service, account
kind, operation and decision, whether an event is ordinary in that sense and which stateful
detectors run; `WorkingWindows` answers "in working time?" once per person's schedules and
minute. The engine sends every event that is not provably ordinary through all its detectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter, methodcaller
from typing import Final
from zoneinfo import ZoneInfo

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.validation import IDENTITY_FIELDS, Identity
from civicmeter.policy.detectors import AutomationBurstSettings
from civicmeter.policy.organization import OrganizationPolicy
from civicmeter.policy.working_time import WorkingTime
from civicmeter.processor.detection.detectors.automation_burst import AutomationBurstDetector

# The fields the engine reads of every event, each read once per batch (by C-level getters).
# An event's identity is validation's (the processor hands over the one it read): gateway,
# organisation, department, user, account kind, provider, service, model, operation,
# purpose, decision; the engine uses these positions of it:
ORGANIZATION: Final = 1
DEPARTMENT: Final = 2
USER: Final = 3
ACCOUNT_KIND: Final = 4
PROVIDER: Final = 5
SERVICE: Final = 6
OPERATION: Final = 8
DECISION: Final = 10
identity_of = attrgetter(*IDENTITY_FIELDS)
event_id_of = attrgetter("event_id")
event_time_of = attrgetter("event_time")
time_of = attrgetter("seconds", "nanos")  # of an event_time (read once: each read wraps it)
seat_months_of = attrgetter("usage.seat_months")
has_risk = methodcaller("HasField", "risk")

_OFFSET_BUCKET = 900  # the engine's time-zone offsets are cached per quarter hour
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class EventKind:
    banned: bool  # the provider or service is banned for this organisation
    sanctioned: bool  # the service is sanctioned for this organisation
    # Not banned, sanctioned, an allowed account kind, not denied: none of banned_provider,
    # unsanctioned_service, personal_account, repeated_denials can fire.
    ordinary: bool
    request: bool  # not a subscription (a request a person made, unless it bills seats)
    bursts: AutomationBurstSettings | None  # automation_burst's settings when enabled
    burst_window: int  # with them, the requests a user's window holds
    burst_least: int  # and the fewest requests in it that either of its rules needs
    volume: bool  # volume_spike enabled
    peers: bool  # peer_spike enabled
    new_services: bool  # new_service_in_department enabled
    working_time: WorkingTime | None  # off_hours enabled: the working time it checks
    risk: bool  # pii_sent or non_work_content enabled


def event_kind(
    policy: OrganizationPolicy, enabled: frozenset[str], identity: Identity
) -> EventKind:
    provider, service, account_kind = identity[PROVIDER], identity[SERVICE], identity[ACCOUNT_KIND]
    operation, decision = identity[OPERATION], identity[DECISION]
    banned = policy.is_banned(provider, service)
    sanctioned = service in policy.sanctioned_services
    return EventKind(
        banned=banned,
        sanctioned=sanctioned,
        ordinary=(
            not banned
            and sanctioned
            and policy.allows_account_kind(account_kind)
            and decision != pb.DECISION_DENY
        ),
        request=operation != "subscription",
        bursts=(policy.detectors.automation_burst if "automation_burst" in enabled else None),
        burst_window=AutomationBurstDetector.window_size(policy.detectors.automation_burst),
        burst_least=AutomationBurstDetector.least_requests(policy.detectors.automation_burst),
        volume="volume_spike" in enabled,
        peers="peer_spike" in enabled,
        new_services="new_service_in_department" in enabled,
        working_time=policy.working_time if "off_hours" in enabled else None,
        risk="pii_sent" in enabled or "non_work_content" in enabled,
    )


def may_flag_risk(policy: OrganizationPolicy, risk: pb.RiskSignals) -> bool:
    """Whether pii_sent or non_work_content may fire on these risk signals."""
    return bool(risk.pii_findings) or policy.non_work_categories.matches(risk.content_category)


class WorkingWindows:
    """Whether an event falls in its person's working time, exactly as off_hours decides it
    (WorkingTime.covers of the event's local day and second), remembered per organisation
    (and person, where schedules name people) and UTC minute: every window's bounds and grace
    are whole minutes, and so is the zone's offset, steady through the quarter hour, so the
    minute decides the local minute."""

    def __init__(self) -> None:
        # (organisation, UTC minute), or (organisation, the person's schedules, UTC minute)
        # where schedules name departments or people -> in working time (decided minutes).
        self.minutes: dict[tuple[object, ...], bool] = {}
        self._people: dict[tuple[str, str, str], tuple[int, ...]] = {}
        self._offsets: dict[tuple[ZoneInfo, int], int | None] = {}
        self._by_minute: dict[int, bool] = {}  # id(WorkingTime) -> all bounds whole minutes
        self._keep: dict[int, WorkingTime] = {}  # keeps the ids above meaningful

    def covered(
        self,
        working_time: WorkingTime,
        organization_id: str,
        department_id: str,
        user_id: str,
        day: int,
        second: int,
        seconds: int,
        nanos: int,
    ) -> bool:
        """True when off_hours cannot fire for the event at `seconds`, `nanos` whose local day
        and second the engine computed with its quarter-hour offset; False when it may (or
        when the engine's local time might differ from off_hours' own)."""
        if int(seconds + nanos / 1e9) != seconds:
            return False  # off_hours truncates the float time: another second
        # Remembered per UTC minute (and schedules, where they differ by person).
        key: tuple[object, ...] = (
            (
                organization_id,
                self.schedules(working_time, organization_id, department_id, user_id),
                seconds // 60,
            )
            if working_time.schedules
            else (organization_id, seconds // 60)
        )
        covered = self.minutes.get(key)
        if covered is None:
            offset = self._offset(working_time.time_zone, seconds // _OFFSET_BUCKET)
            if offset is None:
                return False
            covered = working_time.covers(day, second, department_id, user_id)
            if not self._whole_minutes(working_time) or offset % 60:
                return covered  # the minute does not decide: not remembered
            if len(self.minutes) >= _CACHE_LIMIT:
                self.minutes.clear()
            self.minutes[key] = covered
        return covered

    def schedules(
        self, working_time: WorkingTime, organization_id: str, department_id: str, user_id: str
    ) -> tuple[int, ...]:
        """Which of the organisation's schedules apply to the person (their ids): people with
        the same ones share what is remembered per minute."""
        key = (organization_id, department_id, user_id)
        found = self._people.get(key)
        if found is None:
            found = tuple(map(id, working_time.schedules_for(department_id, user_id)))
            if len(self._people) >= _CACHE_LIMIT:
                self._people.clear()
            self._people[key] = found
            self._whole_minutes(working_time)  # keeps the schedules, and so their ids, alive
        return found

    def _offset(self, zone: ZoneInfo, bucket: int) -> int | None:
        """The zone's UTC offset (seconds) when it is the same through the quarter hour (so
        the offset the engine caches for its start is every second's); None when not."""
        key = (zone, bucket)
        if key not in self._offsets:
            start = bucket * _OFFSET_BUCKET
            first = datetime.fromtimestamp(start, zone).utcoffset()
            last = datetime.fromtimestamp(start + _OFFSET_BUCKET - 1, zone).utcoffset()
            if len(self._offsets) >= _CACHE_LIMIT:
                self._offsets.clear()
            steady = first == last
            self._offsets[key] = (int(first.total_seconds()) if first else 0) if steady else None
        return self._offsets[key]

    def _whole_minutes(self, working_time: WorkingTime) -> bool:
        whole = self._by_minute.get(id(working_time))
        if whole is None:
            whole = all(
                schedule.start_second % 60 == 0
                and schedule.end_second % 60 == 0
                and schedule.grace_seconds % 60 == 0
                for schedule in (working_time.office, *working_time.schedules)
            )
            self._by_minute[id(working_time)] = whole
            self._keep[id(working_time)] = working_time
        return whole
