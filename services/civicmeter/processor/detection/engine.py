"""The detection engine: every detector over each micro-batch, with bounded state.

Pure and Kafka-free: the processor hands it validated events with their rated cost and
publishes what it returns. Given the same events in the same order it returns the same
alerts. An event id seen recently is skipped (at-least-once redelivery never counts twice),
and a dedup key raised recently is not raised again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.validation import EventColumns, Identity
from civicmeter.policy.detectors import DETECTOR_NAMES, AutomationBurstSettings
from civicmeter.policy.organization import OrganizationPolicy, PolicySet
from civicmeter.policy.working_time import WorkingTime
from civicmeter.processor.detection.activity import ActivityTracker
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap, RecentSet
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.day_activity import DayActivity, ServiceUse
from civicmeter.processor.detection.detectors.automation_burst import (
    AutomationBurstDetector,
    Recent,
)
from civicmeter.processor.detection.detectors.banned_provider import BannedProviderDetector
from civicmeter.processor.detection.detectors.base import Detector
from civicmeter.processor.detection.detectors.new_service_in_department import (
    NewServiceInDepartmentDetector,
    Seen,
)
from civicmeter.processor.detection.detectors.non_work_content import NonWorkContentDetector
from civicmeter.processor.detection.detectors.off_hours import OffHoursDetector
from civicmeter.processor.detection.detectors.peer_spike import Department, PeerSpikeDetector
from civicmeter.processor.detection.detectors.personal_account import PersonalAccountDetector
from civicmeter.processor.detection.detectors.pii_sent import PiiSentDetector
from civicmeter.processor.detection.detectors.repeated_denials import RepeatedDenialsDetector
from civicmeter.processor.detection.detectors.unsanctioned_service import (
    UnsanctionedServiceDetector,
)
from civicmeter.processor.detection.detectors.volume_spike import VolumeSpikeDetector
from civicmeter.processor.detection.event_kinds import (
    ACCOUNT_KIND,
    DECISION,
    OPERATION,
    PROVIDER,
    SERVICE,
    EventKind,
    WorkingWindows,
    event_id_of,
    event_kind,
    event_time_of,
    has_risk,
    identity_of,
    may_flag_risk,
    seat_months_of,
    time_of,
)
from civicmeter.processor.detection.state import DEPARTMENT, USER, StateRecord
from civicmeter.processor.detection.user_activity import DayTotals, UserActivity

# The detectors that need all of an organisation's events: where users' events are spread over
# processors, they run on day totals (DetectionEngine.apply_activity) gathered by organisation.
ORGANIZATION_DETECTORS = ("peer_spike", "new_service_in_department")
# The rest need only one user's events: they run where the user's partition is.
USER_DETECTORS = tuple(name for name in DETECTOR_NAMES if name not in ORGANIZATION_DETECTORS)
# Where a record's events start in a batch: (index of its first event, partition, offset).
SourceMark = tuple[int, int, int]
ZERO = Decimal(0)
# Per user, the ids of the latest events kept with the user's state: a gateway's redelivery of
# one of them is still recognised after a restart (retries come within minutes).
RECENT_IDS = 32


@dataclass(frozen=True)
class EngineLimits:
    """Caps on the engine's memory; past a cap the least recently used entry goes."""

    seen_events: int = 200_000  # event ids remembered to skip redeliveries
    raised_alerts: int = 200_000  # dedup keys remembered to raise each once
    users: int = 200_000  # per-user baselines and burst windows
    departments: int = 20_000  # peer statistics and services seen, per department
    department_members: int = 5_000  # members remembered per department for peer statistics
    organizations: int = 10_000  # per-organisation policy lookups


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_OFFSET_BUCKET = 900  # time-zone offsets change only on quarter hours (UTC)
_CACHE_LIMIT = 100_000
_VOLUME = VolumeSpikeDetector()  # stateless: the engine's ordinary path calls it directly
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_USER_OF = itemgetter(1, 3)  # an identity's (organisation, user)
# The parts of an identity its event kind depends on (event_kinds.event_kind), beside the
# organisation: provider, service, account kind, operation, decision.
_DECISIVE = itemgetter(PROVIDER, SERVICE, ACCOUNT_KIND, OPERATION, DECISION)
_SEAT_MONTHS = itemgetter(QUANTITIES.index("seat_months"))  # of validation's quantities


@dataclass(frozen=True)
class _Organization:
    policy: OrganizationPolicy
    enabled: tuple[Detector, ...]
    offsets: dict[int, int]  # quarter hour (epoch / 900) -> UTC offset in seconds
    months: dict[int, int]  # local date ordinal -> year * 100 + month
    # What an event kind decides, by what decides it: provider, service, account kind,
    # operation, decision (many identities, of different people, share one).
    kinds: dict[tuple[str, str, int, str, int], EventKind]

    def local(self, seconds: int) -> tuple[int, int, int]:
        """(local date ordinal, second of the day, year * 100 + month) of an epoch second."""
        bucket = seconds // _OFFSET_BUCKET
        offset = self.offsets.get(bucket)
        if offset is None:
            zone = self.policy.working_time.time_zone
            delta = datetime.fromtimestamp(bucket * _OFFSET_BUCKET, zone).utcoffset()
            offset = int(delta.total_seconds()) if delta else 0
            if len(self.offsets) > _CACHE_LIMIT:
                self.offsets.clear()
            self.offsets[bucket] = offset
        day, second = divmod(seconds + offset, 86_400)
        day += _EPOCH_ORDINAL
        month = self.months.get(day)
        if month is None:
            when = date.fromordinal(day)
            month = when.year * 100 + when.month
            if len(self.months) > _CACHE_LIMIT:
                self.months.clear()
            self.months[day] = month
        return day, second, month


_NO_POSITION = (-1, -1)  # events processed without their usage.raw position


@dataclass(slots=True)
class _Note:
    """What one user did since the last take_activity."""

    department: str
    position: tuple[int, int]  # the usage.raw (partition, offset) of the last record
    days: dict[int, tuple[str, float]] = field(default_factory=dict)  # day -> last event
    # service -> (provider, first event time, first event id)
    services: dict[str, tuple[str, float, str]] = field(default_factory=dict)


def _note(
    pending: dict[tuple[str, str], _Note],
    user: tuple[str, str],
    ctx: EventContext,
    position: tuple[int, int] | None,
) -> None:
    note = pending.get(user)
    if note is None:
        note = pending[user] = _Note(ctx.department_id, position or _NO_POSITION)
    else:
        note.department = ctx.department_id
        note.position = position or _NO_POSITION
    seconds = ctx.seconds
    note.days[ctx.day] = (ctx.event.event_id, seconds)
    if ctx.sanctioned and not ctx.banned:
        service = ctx.service_id
        known = note.services.get(service)
        if known is None or seconds < known[1]:
            note.services[service] = (ctx.provider_name, seconds, ctx.event.event_id)


@dataclass(slots=True)
class _UserSlot:
    """What one batch looked up for a user, kept for the user's later events of the batch."""

    ids: deque[str] | None = None  # the user's recent event ids
    state: UserActivity | None = None  # with `recent`, valid until a detector may replace them
    recent: Recent | None = None
    note: _Note | None = None  # what take_activity will report
    last: int = -1  # the index of the user's last request
    settings: AutomationBurstSettings | None = None  # automation_burst's, at that request
    # A minute (and the department) in which the user's request was found in working time.
    minute: int | None = None
    minute_department: str = ""


def _remembered_in_time(
    minutes: dict[tuple[object, ...], bool],
    schedules: Callable[[WorkingTime, str, str, str], tuple[int, ...]],
    working_time: WorkingTime,
    identity: Identity,
    seconds: int,
    slot: _UserSlot,
) -> bool:
    """Whether WorkingWindows remembers the minute of `seconds` as working time for the
    event's person; if so, the user's other requests of that minute (and department) are."""
    minute = seconds // 60
    organization_id = identity[1]
    key: tuple[object, ...] = (
        (organization_id, minute)
        if not working_time.schedules
        else (
            organization_id,
            schedules(working_time, organization_id, identity[2], identity[3]),
            minute,
        )
    )
    if not minutes.get(key):
        return False
    slot.minute, slot.minute_department = minute, identity[2]
    return True


def _context(
    event: pb.UsageEvent,
    cost: Decimal,
    org: _Organization,
    kind: EventKind,
    version: str,
    identity: Identity,
    seconds: int,
    moment: float,
    activity: bool,
    today: UserActivity | None,
) -> EventContext:
    """An event's full context (`seconds`: its whole epoch second; `moment`: with nanos)."""
    day, second, month = org.local(seconds)
    return EventContext(
        event=event,
        organization_id=identity[1],
        department_id=identity[2],
        user_id=identity[3],
        service_id=identity[SERVICE],
        provider_name=identity[PROVIDER],
        risk=event.risk if event.HasField("risk") else None,
        cost=cost,
        policy=org.policy,
        policy_version=version,
        seconds=moment,
        day=day,
        second=second,
        month=month,
        activity=activity,
        banned=kind.banned,
        sanctioned=kind.sanctioned,
        today=today,
    )


def _summary_context(
    org: _Organization,
    version: str,
    update: DayActivity,
    event_id: str,
    seconds: float,
    service: str,
    provider: str,
) -> EventContext:
    """The context of a request an activity update summarises (only its id is known)."""
    policy = org.policy
    day, second, month = org.local(int(seconds))
    return EventContext(
        event=pb.UsageEvent(event_id=event_id),
        organization_id=update.organization_id,
        department_id=update.department_id,
        user_id=update.user_id,
        service_id=service,
        provider_name=provider,
        risk=None,
        cost=ZERO,
        policy=policy,
        policy_version=version,
        seconds=seconds,
        day=day,
        second=second,
        month=month,
        activity=True,
        banned=policy.is_banned(provider, service),
        sanctioned=service in policy.sanctioned_services,
    )


class DetectionEngine:
    def __init__(
        self,
        policies: PolicySet,
        limits: EngineLimits | None = None,
        detectors: Collection[str] | None = None,
        *,
        fold_repeats: bool = True,
        activity_updates: bool = False,
    ) -> None:
        """`detectors`: the names of those to run (default all), e.g. to run the
        organisation-wide ones (peer_spike, new_service_in_department) where all of an
        organisation's events arrive, and the rest where one user's do.

        `fold_repeats`: raise each dedup key once while remembered (True), or return every
        occurrence (False) for a store that folds them into one alert with a count.

        `activity_updates`: keep users' day totals for take_activity, to feed an engine that
        runs the organisation-wide detectors elsewhere (apply_activity)."""
        unknown = set(detectors or ()) - set(DETECTOR_NAMES)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {DETECTOR_NAMES}")
        self.limits = limits or EngineLimits()
        self._only = frozenset(DETECTOR_NAMES if detectors is None else detectors)
        self._policies = policies
        self._seen: RecentSet[str] = RecentSet(self.limits.seen_events)
        self._raised: RecentSet[str] = RecentSet(self.limits.raised_alerts)
        self._fold = fold_repeats
        self._organizations: dict[str, _Organization] = {}
        self._activity = ActivityTracker(self.limits.users)
        self._bursts = AutomationBurstDetector(self.limits.users)
        self._peers = PeerSpikeDetector(
            self._activity, self.limits.departments, self.limits.department_members
        )
        self._new_services = NewServiceInDepartmentDetector(self.limits.departments)
        self._denials = RepeatedDenialsDetector(self.limits.users)
        # The order alerts of one event come out in: service-level findings first.
        self._detectors: tuple[Detector, ...] = (
            BannedProviderDetector(),
            UnsanctionedServiceDetector(),
            PersonalAccountDetector(),
            PiiSentDetector(),
            NonWorkContentDetector(),
            OffHoursDetector(),
            self._bursts,
            _VOLUME,
            self._peers,
            self._new_services,
            self._denials,
        )
        # Per kind of event (event_kinds.py): its organisation and what it decides, for the
        # policies it was worked out for; and when requests are in working time.
        self._kinds: dict[Identity, tuple[_Organization, EventKind]] = {}
        self._kinds_of: PolicySet | None = None
        self._windows = WorkingWindows()
        # False: every event through every detector (the reference the ordinary path equals).
        self._ordinary_path = True
        self.ordinary_batches = 0  # batches whose ordinary requests took the ordinary path
        self.repeats = 0  # redelivered events skipped
        self.replayed = 0  # events or updates of a replay, already applied, skipped
        # Per user, the usage.raw (partition, offset) of the last record applied.
        self._positions: LruMap[tuple[str, str], tuple[int, int]] = LruMap(self.limits.users)
        # Per usage.raw partition, the highest offset ever applied to a user: a record after
        # it cannot be a replay for any user.
        self._highest_offsets: dict[int, int] = {}
        self._recent_ids: LruMap[tuple[str, str], deque[str]] = LruMap(self.limits.users)
        # Users (with the usage.raw partition, where known) and departments changed since the
        # last take_state.
        self._touched_users: dict[tuple[str, str], int | None] = {}
        self._touched_departments: set[tuple[str, str]] = set()
        # What take_activity reports, when this engine reports it.
        self._pending: dict[tuple[str, str], _Note] | None = {} if activity_updates else None

    @property
    def policies(self) -> PolicySet:
        return self._policies

    def replace_policies(self, policies: PolicySet) -> None:
        """Use a new policy version from now on, keeping baselines and seen ids."""
        self._policies = policies
        self._organizations = {}

    def process(
        self,
        batch: Sequence[tuple[pb.UsageEvent, Decimal]],
        sources: Sequence[SourceMark] = (),
        columns: EventColumns | None = None,
    ) -> list[Alert]:
        """The alerts this batch raises, in event order (each dedup key once when folding).

        `sources`: where the batch's events came from, one (index of the record's first event
        in `batch`, usage.raw partition, offset) per record, in order. With them, a user's
        events from a record at or before the last one applied to the user (a replay after a
        crash, once the state is restored) change nothing and raise nothing again: that
        record's alerts were published before the state that counts it was written.

        `columns`: each event's identity, id, time and quantities as validation read them
        (validate_batch's columns, one entry per event of `batch`), where the caller has them,
        so that they are not read again.

        The fields every event needs are read once per batch, column by column, and what an
        event's organisation, service, account kind, operation and decision decide is worked
        out once per such kind (event_kinds.py). An ordinary request (no service-, account- or
        risk-level detector can fire, in working time, on its user's current day) only counts
        towards its user's state, and a detector's alert is built only where its state says it
        fires; any other event goes through every detector (_detect_one). Both ways change the
        same state in the same order and raise the same alerts."""
        alerts: list[Alert] = []
        if not batch:
            return alerts
        if self._kinds_of is not self._policies:  # a new policy version: worked out again
            self._kinds, self._kinds_of, self._windows = {}, self._policies, WorkingWindows()
        windows = self._windows
        kinds, covered, minutes = self._kinds, windows.covered, windows.minutes
        schedules = windows.schedules
        seen, raised, fold = self._seen, self._raised, self._fold
        seen_add, raised_add = seen.add, raised.add
        version = self._policies.version
        positions, pending, recent_ids = self._positions, self._pending, self._recent_ids
        current, state_of = self._activity.current, self._activity.lookup
        bursts, peers, new_services = self._bursts, self._peers, self._new_services
        finding, volume_detect, window_of = bursts.finding, _VOLUME.detect, bursts.lookup
        events: list[pb.UsageEvent] = list(map(_FIRST, batch))
        costs: list[Decimal] = list(map(_SECOND, batch))
        if columns is None:
            identities: Sequence[Identity] = list(map(identity_of, events))
            event_ids: Sequence[str] = list(map(event_id_of, events))
            times = list(map(time_of, map(event_time_of, events)))
            seconds_column: Sequence[int] = list(map(_FIRST, times))
            nanos_column: Sequence[int] = list(map(_SECOND, times))
            seat_months: list[int] = list(map(seat_months_of, events))
            rare: Sequence[bool] = list(map(has_risk, events))
        else:
            if len(columns.identities) != len(batch) or len(columns.event_ids) != len(batch):
                raise ValueError(f"{len(columns.identities)} columns' events for {len(batch)}")
            identities, event_ids = columns.identities, columns.event_ids
            seconds_column, nanos_column = columns.seconds, columns.nanos
            seat_months = list(map(_SEAT_MONTHS, columns.quantities))
            rare = columns.rare  # True where the event may have risk signals
        users: list[tuple[str, str]] = list(map(_USER_OF, identities))
        size = len(batch)
        marks = list(sources)
        applied: dict[tuple[str, str], tuple[int, int]] = {}
        # Whether a user's events of a record may be a replay: not when the record comes after
        # every position ever applied on its partition (the common case). Then every user of
        # the record has it applied, and no event needs the check.
        highest = self._highest_offsets
        check_positions = any(offset <= highest.get(p, -1) for _, p, offset in marks) or (
            bool(marks) and not self._ordinary_path  # the reference checks every event
        )
        if marks and not check_positions:
            for (start, partition, record), end in zip(
                marks, [mark[0] for mark in marks[1:]] + [size], strict=True
            ):
                if start < end:
                    applied.update(dict.fromkeys(users[start:end], (partition, record)))
        # Event ids remembered all at once when none is a repeat (nor a replay's): otherwise
        # one by one, in the loop.
        check_seen = check_positions or not self._ordinary_path or not seen.add_new(event_ids)
        # A user's and a department's state are looked up (and marked as used) once per
        # batch; at the end every entry used is marked again in the order of its last use.
        # That leaves each map as a lookup per event would, when no entry can be evicted
        # during the batch: otherwise every event goes through every detector.
        ordinary_path = self._ordinary_path and self._batch_fits(identities)
        self.ordinary_batches += ordinary_path
        slots: dict[tuple[str, str], _UserSlot] = {}
        # Users' recent ids looked up without marking them used when none can be evicted
        # during the batch; marked at the end in the order of their first use.
        ids_unmarked = len(recent_ids) + size <= recent_ids.capacity
        ids_of = recent_ids.lookup if ids_unmarked else recent_ids.get
        ids_used: list[tuple[str, str]] = []
        department_handles: dict[tuple[str, str], tuple[Department | None, Seen | None]] = {}
        department_use: dict[tuple[str, str], int] = {}
        services_use: dict[tuple[str, str], int] = {}
        upcoming_marks = iter(marks)
        upcoming = next(upcoming_marks, None)
        next_start = size if upcoming is None else upcoming[0]
        position: tuple[int, int] | None = None
        # Each event's kind as known before the batch (None: worked out in the loop).
        known_kinds = list(map(kinds.get, identities))
        for index, (event, cost, identity, found, user, event_id, seconds, nanos, seats, odd) in (
            enumerate(
                zip(
                    events, costs, identities, known_kinds, users, event_ids, seconds_column,
                    nanos_column, seat_months, rare, strict=True,
                )
            )
        ):  # fmt: skip
            if index >= next_start:
                while upcoming is not None and upcoming[0] <= index:
                    position = (upcoming[1], upcoming[2])
                    upcoming = next(upcoming_marks, None)
                next_start = size if upcoming is None else upcoming[0]
            # A user's position is looked up once per record and batch, not per event: a
            # record holds a few hundred events of far fewer users.
            if check_positions and position is not None and applied.get(user) is not position:
                done = positions.peek(user)
                if done is not None and done[0] == position[0] and done[1] >= position[1]:
                    self.replayed += 1
                    continue
                applied[user] = position
            if check_seen and not seen_add(event_id):
                self.repeats += 1
                continue
            slot = slots.get(user)
            if slot is None:
                slot = slots[user] = _UserSlot()
            if position is not None:
                ids = slot.ids
                if ids is None:
                    ids = ids_of(user)
                    if ids is None:
                        ids = deque(maxlen=RECENT_IDS)
                        recent_ids.put(user, ids)
                    slot.ids = ids
                    ids_used.append(user)
                ids.append(event_id)
            if found is None:
                found = kinds.get(identity)
            if found is None:
                if len(kinds) >= _CACHE_LIMIT:
                    kinds.clear()
                org = self._organization(identity[1])
                decisive = _DECISIVE(identity)
                kind = org.kinds.get(decisive)
                if kind is None:
                    if len(org.kinds) >= _CACHE_LIMIT:
                        org.kinds.clear()
                    enabled = frozenset(d.name for d in org.enabled)
                    kind = org.kinds[decisive] = event_kind(org.policy, enabled, identity)
                found = kinds[identity] = (org, kind)
            org, kind = found
            offset = org.offsets.get(seconds // _OFFSET_BUCKET)
            if offset is None:
                day, second, _ = org.local(seconds)
            else:
                day, second = divmod(seconds + offset, 86_400)
                day += _EPOCH_ORDINAL
            activity = kind.request and not seats
            moment = seconds + nanos / 1e9
            if activity:
                slot.last = index
                slot.settings = kind.bursts
                state = slot.state
            else:
                state = None
            if (
                not ordinary_path
                or not kind.ordinary
                or (
                    odd  # one of the rare fields, perhaps risk signals
                    and kind.risk
                    and has_risk(event)
                    and may_flag_risk(org.policy, event.risk)
                )
                or (
                    activity
                    and (
                        (working_time := kind.working_time) is not None
                        and not (
                            # In working time: as found for the user's last request of the
                            # minute, as remembered for the minute (the common answer), or as
                            # WorkingWindows works it out.
                            (
                                int(moment) == seconds  # off_hours' whole second
                                and (
                                    (
                                        seconds // 60 == slot.minute
                                        and identity[2] == slot.minute_department
                                    )
                                    or _remembered_in_time(
                                        minutes, schedules, working_time, identity, seconds, slot
                                    )
                                )
                            )
                            or covered(
                                working_time,
                                identity[1],
                                identity[2],
                                identity[3],
                                day,
                                second,
                                seconds,
                                nanos,
                            )
                        )
                    )
                )
            ):
                full = self._detect_one(
                    event,
                    cost,
                    org,
                    kind,
                    version,
                    identity,
                    seconds,
                    nanos,
                    activity,
                    user,
                    position,
                    alerts,
                )
                # Its detectors may have made new state for the user or the department.
                group = (identity[1], identity[2])
                slot.state = slot.recent = None
                department_handles.pop(group, None)
                if kind.peers and full.today is not None:
                    department_use[group] = index
                if kind.new_services and activity and kind.sanctioned and not kind.banned:
                    services_use[group] = index
                continue
            if not activity:  # an ordinary seat charge: spend, not activity; nothing fires
                continue
            # An ordinary request: none of the detectors of service, account, risk and working
            # time can fire, only the per-user and department ones.
            department_id = identity[2]
            ctx: EventContext | None = None
            fresh = state is None
            if fresh:
                state = state_of(user)  # marked as used at the end, in the order of last use
            if state is not None and state.day == day:
                # On its user's current day: counted as observe counts it.
                state.department = department_id
                state.count += 1
                state.cost += cost
                if pending is not None:  # _note of a request (sanctioned and not banned)
                    note = slot.note
                    if note is None:
                        note = pending.get(user)
                        if note is None:
                            note = pending[user] = _Note(department_id, _NO_POSITION)
                        slot.note = note
                    note.department = department_id
                    note.position = position or _NO_POSITION
                    note.days[day] = (event_id, moment)
                    service = identity[SERVICE]
                    known = note.services.get(service)
                    if known is None or moment < known[1]:
                        note.services[service] = (identity[PROVIDER], moment, event_id)
            else:
                # The user's first request of a day (or a new user's, or a late one): observe
                # rolls the day over, with the request's full context.
                ctx = _context(
                    event, cost, org, kind, version, identity, seconds, moment, True, None
                )
                state = ctx.today = self._activity.observe(ctx)
                if pending is not None:
                    _note(pending, user, ctx, position)
                slot.state = slot.recent = None
                fresh = True
                if state is None:  # late: the remaining detectors as the full path runs them
                    for detector in org.enabled:
                        for alert in detector.detect(ctx):
                            if not fold or raised_add(alert.dedup_key):
                                alerts.append(alert)
                    group = (identity[1], department_id)
                    department_handles.pop(group, None)
                    if kind.new_services:
                        services_use[group] = index
                    continue
            settings = kind.bursts
            if fresh:
                recent = None
                if settings is not None:
                    recent = window_of(user)  # marked as used at the end, as `state`
                    if recent is None or recent.times.maxlen != kind.burst_window:
                        recent = bursts.recent(user, settings)
                slot.state, slot.recent = state, recent
            else:
                recent = slot.recent
            if recent is not None and settings is not None:
                window = recent.times
                window.append(moment)
                if recent.alerted_day != day and len(window) >= kind.burst_least:
                    burst = finding(recent, settings)
                    if burst is not None:
                        ctx = _context(
                            event, cost, org, kind, version, identity, seconds, moment, True, state
                        )
                        for alert in bursts.raise_alert(ctx, recent, settings, burst):
                            if not fold or raised_add(alert.dedup_key):
                                alerts.append(alert)
            if kind.volume and state.volume_alerted_day != day:
                count_limit, cost_limit = state.count_limit, state.cost_limit
                if (count_limit is not None and state.count > count_limit.limit) or (
                    cost_limit is not None and state.cost > cost_limit.limit
                ):
                    ctx = ctx or _context(
                        event, cost, org, kind, version, identity, seconds, moment, True, state
                    )
                    for alert in volume_detect(ctx):
                        if not fold or raised_add(alert.dedup_key):
                            alerts.append(alert)
            if kind.peers or kind.new_services:
                raising: list[Alert] = []
                user_id = identity[3]
                group = (identity[1], department_id)
                found_group = department_handles.get(group)
                if found_group is None:
                    found_group = department_handles[group] = (
                        peers.joined(group, user_id) if kind.peers else None,
                        new_services.seen(group) if kind.new_services else None,
                    )
                department, known_services = found_group
                if department is not None:
                    department_use[group] = index
                    if user_id not in department.members:
                        peers.joined(group, user_id)
                    limit = department.limit
                    # peer_spike's own conditions, its month looked up only past the limit.
                    if day > department.day or (
                        limit is not None
                        and state.count > limit.limit
                        and (state.count_limit is None or state.count_limit.median > limit.limit)
                        and state.peer_alerted_month != org.local(seconds)[2]
                    ):
                        ctx = ctx or _context(
                            event, cost, org, kind, version, identity, seconds, moment, True, state
                        )
                        raising.extend(peers.detect(ctx))
                if kind.new_services:
                    services_use[group] = index
                    if known_services is None or identity[SERVICE] not in known_services.services:
                        ctx = ctx or _context(
                            event, cost, org, kind, version, identity, seconds, moment, True, state
                        )
                        raising.extend(new_services.detect(ctx))
                        department_handles.pop(group, None)  # a department new to it
                    elif moment < known_services.first_seconds:
                        known_services.first_seconds = moment
                for alert in raising:
                    if not fold or raised_add(alert.dedup_key):
                        alerts.append(alert)
        # Each map's entries in the order of their last use, as a use per event leaves them
        # (no entry was evicted meanwhile: the batch fits, see above).
        active = sorted(
            ((slot.last, user, slot.settings) for user, slot in slots.items() if slot.last >= 0),
            key=_FIRST,
        )
        if ordinary_path:
            self._activity.touch(map(_SECOND, active))
            bursts.touch([user for _, user, settings in active if settings is not None])
        else:  # entries may have been evicted meanwhile: looked up (and made) as detect does
            for _, user, settings in active:
                current(user)
                if settings is not None:
                    bursts.recent(user, settings)
        for group in sorted(department_use, key=department_use.__getitem__):
            peers.touch(group)
        for group in sorted(services_use, key=services_use.__getitem__):
            new_services.seen(group)
        if ids_unmarked:
            recent_ids.touch(ids_used)
        if applied:
            positions.put_all(applied)
            self._touched_users.update(zip(applied, map(_FIRST, applied.values()), strict=True))
            for _, partition, record in marks:
                if record > highest.get(partition, -1):
                    highest[partition] = record
        return alerts

    def _batch_fits(self, identities: Sequence[Identity]) -> bool:
        """Whether the batch's users and departments fit in the state's maps without
        evicting any entry, whatever the order they come in."""
        limits, activity, most = self.limits, self._activity, len(identities)
        if (
            len(activity) + most <= limits.users
            and len(self._bursts) + most <= limits.users
            and len(self._peers) + most <= limits.departments
            and len(self._new_services) + most <= limits.departments
        ):
            return True  # even if every event were of a user and department new to them
        users = {(identity[1], identity[3]) for identity in identities}
        if len(activity) + len(users) > limits.users or len(self._bursts) + len(users) > (
            limits.users
        ):
            new = [user for user in users if activity.peek(*user) is None]
            if (
                len(activity) + len(new) > limits.users
                or len(self._bursts) + sum(user not in self._bursts for user in users)
                > limits.users
            ):
                return False
        groups = {(identity[1], identity[2]) for identity in identities}
        for departments in (self._peers, self._new_services):
            if (
                len(departments) + len(groups) > limits.departments
                and len(departments) + sum(group not in departments for group in groups)
                > limits.departments
            ):
                return False
        return True

    def _detect_one(
        self,
        event: pb.UsageEvent,
        cost: Decimal,
        org: _Organization,
        kind: EventKind,
        version: str,
        identity: Identity,
        seconds: int,
        nanos: int,
        activity: bool,
        user: tuple[str, str],
        position: tuple[int, int] | None,
        alerts: list[Alert],
    ) -> EventContext:
        """One event through every enabled detector, with its full context (returned)."""
        ctx = _context(
            event,
            cost,
            org,
            kind,
            version,
            identity,
            seconds,
            seconds + nanos / 1e9,
            activity,
            None,
        )
        if activity:
            ctx.today = self._activity.observe(ctx)
            if self._pending is not None:
                _note(self._pending, user, ctx, position)
        raised, fold = self._raised, self._fold
        for detector in org.enabled:
            for alert in detector.detect(ctx):
                if not fold or raised.add(alert.dedup_key):
                    alerts.append(alert)
        return ctx

    def take_activity(self) -> list[DayActivity]:
        """The day totals of the users whose requests were counted since the last call, for
        the organisation-wide detectors (apply_activity) wherever they run."""
        pending = self._pending
        if not pending:
            return []
        updates: list[DayActivity] = []
        day_totals = self._activity.day_totals
        for (organization_id, user_id), note in pending.items():
            days = note.days
            partition, offset = note.position
            for day in sorted(days) if len(days) > 1 else days:
                count, cost = day_totals(organization_id, user_id, day)
                event_id, seconds = days[day]
                updates.append(
                    DayActivity(
                        organization_id,
                        note.department,
                        user_id,
                        day,
                        count,
                        str(cost),
                        event_id,
                        seconds,
                        partition,
                        offset,
                    )
                )
            if note.services:  # with the user's last day
                updates[-1].services = [
                    ServiceUse(service, provider, first, event_id)
                    for service, (provider, first, event_id) in note.services.items()
                ]
        self._pending = {}
        return updates

    def apply_activity(self, updates: Iterable[DayActivity]) -> list[Alert]:
        """Run the organisation-wide detectors over users' day totals (take_activity's, from
        every processor). An update older than one already applied to its user is skipped;
        one applied again changes nothing, as its totals are absolute."""
        alerts: list[Alert] = []
        raised, version, positions = self._raised, self._policies.version, self._positions
        touched_users, touched_departments = self._touched_users, self._touched_departments
        peers, new_services = self._peers, self._new_services
        assign, organizations = self._activity.assign_day, self._organizations
        for update in updates:
            organization_id, user_id = update.organization_id, update.user_id
            user = (organization_id, user_id)
            partition, offset = update.source_partition, update.source_offset
            done = positions.peek(user)
            if done is not None and done[0] == partition and done[1] > offset:
                self.replayed += 1
                continue
            positions.put(user, (partition, offset))
            if offset > self._highest_offsets.get(partition, -1):
                self._highest_offsets[partition] = offset
            touched_users[user] = None
            org = organizations.get(organization_id) or self._organization(organization_id)
            policy = org.policy
            department_id = update.department_id
            group = (organization_id, department_id)
            touched_departments.add(group)
            # The update's own day (its last event is of that day, in the same time zone).
            day = update.day
            cost = Decimal(update.cost_krw)
            state = assign(
                user, department_id, day, policy.detectors.volume_spike, update.requests, cost
            )
            enabled = org.enabled
            found: list[Alert] = []
            # A detector's context is built only where its state says it may fire; its own
            # detect then decides, and changes its state as it would have for every update.
            if state is not None and peers in enabled:
                department = peers.joined(group, user_id)
                limit = department.limit
                if day > department.day or (
                    limit is not None
                    and state.count > limit.limit
                    and (state.count_limit is None or state.count_limit.median > limit.limit)
                    and state.peer_alerted_month != org.local(int(update.last_event_time))[2]
                ):
                    ctx = _summary_context(
                        org, version, update, update.last_event_id, update.last_event_time, "", ""
                    )
                    ctx.day, ctx.cost, ctx.today = day, cost, state
                    found.extend(peers.detect(ctx))
            if update.services and new_services in enabled:
                sanctioned = policy.sanctioned_services
                for use in update.services:
                    service = use.service_id
                    if service not in sanctioned or policy.is_banned(use.provider_name, service):
                        continue  # detect ignores it without looking at its state
                    known = new_services.seen(group)
                    if known is not None and service in known.services:
                        if use.first_event_time < known.first_seconds:
                            known.first_seconds = use.first_event_time
                        continue  # known to the department: detect raises nothing
                    found.extend(
                        new_services.detect(
                            _summary_context(
                                org,
                                version,
                                update,
                                use.first_event_id,
                                use.first_event_time,
                                service,
                                use.provider_name,
                            )
                        )
                    )
            if found:
                alerts.extend(a for a in found if not self._fold or raised.add(a.dedup_key))
        return alerts

    @property
    def pending_state(self) -> int:
        """Users and departments changed since the last take_state."""
        return len(self._touched_users) + len(self._touched_departments)

    def take_state(self) -> list[StateRecord]:
        """The state of every user and department changed since the last call, to be written
        once what the changes raised is published (state.py)."""
        records: list[StateRecord] = []
        position_of, ids_of = self._positions.peek, self._recent_ids.peek
        # The parts this engine's detectors keep (an organisation-wide engine keeps no burst
        # windows or denials).
        parts = [("activity", self._activity.export)]
        if "automation_burst" in self._only:
            parts.append(("burst", self._bursts.export))
        if "repeated_denials" in self._only:
            parts.append(("denials", self._denials.export))
        for key, partition in self._touched_users.items():
            values: dict[str, Any] = {}
            position = position_of(key)
            if position is not None:
                values["position"] = position
            for name, export in parts:
                part = export(key)
                if part is not None:
                    values[name] = part
            ids = ids_of(key)
            if ids is not None:
                values["ids"] = list(ids)
            records.append(StateRecord(USER, key[0], key[1], values, partition))
        for key in self._touched_departments:
            values = {}
            for name, part in (
                ("peers", self._peers.export(key)),
                ("services", self._new_services.export(key)),
            ):
                if part is not None:
                    values[name] = part
            records.append(StateRecord(DEPARTMENT, key[0], key[1], values))
        self._touched_users = {}
        self._touched_departments = set()
        return records

    def restore(self, record: StateRecord) -> None:
        """Put back one key's state written by take_state (e.g. when its partition is
        assigned to this process)."""
        key = (record.organization_id, record.id)
        values = record.values
        if record.kind == DEPARTMENT:
            if "peers" in values:
                self._peers.restore(key, values["peers"])
            if "services" in values:
                self._new_services.restore(key, values["services"])
            return
        if "position" in values:
            partition, offset = values["position"]
            self._positions.put(key, (partition, offset))
            if offset > self._highest_offsets.get(partition, -1):
                self._highest_offsets[partition] = offset
        if "activity" in values:
            state = self._activity.restore(key, values["activity"])
            self._peers.restore_member(record.organization_id, state.department, record.id)
        if "burst" in values:
            self._bursts.restore(key, values["burst"])
        if "denials" in values:
            self._denials.restore(key, values["denials"])
        if "ids" in values:
            ids: deque[str] = deque(values["ids"], maxlen=RECENT_IDS)
            self._recent_ids.put(key, ids)
            for event_id in ids:
                self._seen.add(event_id)

    def seed_user_days(
        self,
        organization_id: str,
        department_id: str,
        user_id: str,
        days: Sequence[tuple[date, int, Decimal]],
    ) -> None:
        """A user's requests and cost per local day (most recent last), e.g. from stored
        daily totals at start-up, so their baseline needs no new warm-up."""
        policy = self._organization(organization_id).policy
        totals: list[DayTotals] = [(day.toordinal(), count, cost) for day, count, cost in days]
        self._activity.seed(
            organization_id, user_id, department_id, totals, policy.detectors.volume_spike
        )

    def state_sizes(self) -> dict[str, int]:
        """Entries held per kind of state (each is capped by EngineLimits)."""
        return {
            "seen_events": len(self._seen),
            "raised_alerts": len(self._raised),
            "users": len(self._activity),
            "burst_windows": len(self._bursts),
            "departments": len(self._peers),
            "department_services": len(self._new_services),
            "organizations": len(self._organizations),
        }

    def _organization(self, organization_id: str) -> _Organization:
        org = self._organizations.get(organization_id)
        if org is None:
            policy = self._policies.for_organization(organization_id)
            enabled = tuple(
                d
                for d in self._detectors
                if d.name in self._only and getattr(policy.detectors, d.name).enabled
            )
            org = _Organization(policy, enabled, {}, {}, {})
            if len(self._organizations) >= self.limits.organizations:
                del self._organizations[next(iter(self._organizations))]  # the oldest
            self._organizations[organization_id] = org
        return org
