"""A labelled misuse scenario for the detection engine: synthetic, deterministic by seed.

Weeks of normal generative-AI use by the staff of Korea's 17 metropolitan and provincial
governments (user counts from loadtests.scenario.governments_of, scaled), with each kind of
misuse injected and labelled with the alerts it should raise.

Normal use follows the policy (config/policies.yaml plus a night shift per government):
staff use only their organisation's sanctioned services, with organisational accounts,
in sessions of 1-5 requests inside their working windows: office hours (now and then in the
hour of grace either side), and the remote-work, weekend-duty, 24-hour and night-shift
schedules of their department or of themselves; nobody else works on weekends or public
holidays (Chuseok 16-18 September, 1, 3 and 9 October 2024 fall in the default period). Each
member of staff has a daily rate (lognormal, median 4.5 requests, 1 to 16; Poisson counts), a few
developers per government call the metered APIs, a few findings of business numbers (which
the policy ignores) and work content categories appear, seat-months are charged on the 1st
of the month, and every department uses all of its habitual services on its first day.

Injected, each with labels (alert type, dedup key, and the events any of which may raise it;
for stateful detectors the events of the anomalous day or month):

- banned_provider: DeepSeek requests; unsanctioned_service: a subscription service the
  government does not sanction; personal_account: ChatGPT with a personal account;
  pii_sent: resident/foreigner numbers, passports, accounts, phones, e-mails;
  non_work_content: entertainment, gaming, shopping, dating, personal.*;
- off_hours: staff with no other schedule at 19:30-23:00, on weekends, on public holidays;
- volume_spike: light users (2-3 requests a day) making 26-34 requests on a day late in the
  period, at least three times their busiest earlier day; and developers spending >= 13,000
  KRW on one day in two or three large API calls;
- peer_spike: newcomers making 60-80 requests a day from their first day, and staff who do
  60-75 every day (their own baseline is as high, so only peers show it), in departments with
  at least 10 staff;
- automation_burst: 14-18 requests within 25-45 seconds, or 12-16 at a fixed interval of
  20-120 s (jitter 0.5%), by staff with 8-11 requests a day;
- new_service_in_department: a department's first use of a sanctioned service it had not
  used, at least 18 days after the period starts.

(Budget alerts are not the stream's: the billing service raises them from the stored ledger.)

About 2% of events are delivered a second time up to 10 minutes later (at-least-once
redelivery), 0.3% arrive 1-3 hours late (a gateway's outage), and delivery order is otherwise
event time plus up to 20 s of jitter. On 3% of ordinary days a member of staff makes twice
their usual number of requests (a deadline), which no detector should flag.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import PriceCatalog, UnpricedError
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.policy.working_time import Schedule
from civicmeter.processor.detection.alert import dedup_key
from loadtests.scenario import DEPARTMENTS, SERVICES, Government, seat_usage, user_id

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "config" / "policies.yaml"
DEFAULT_SEED = 20240917
DEFAULT_START = date(2024, 9, 1)
KST = ZoneInfo("Asia/Seoul")
API_SERVICES = {
    "openai-api": ("openai", "gpt-4o"),
    "claude-api": ("anthropic", "claude-3-5-sonnet"),
}
WORK_CATEGORIES = ("work.drafting", "work.translation", "work.summarisation", "work.research")
NON_WORK_CATEGORIES = (
    "entertainment",
    "gaming",
    "shopping",
    "dating",
    "personal.travel",
    "personal.finance",
)
PII_CASES: tuple[dict[str, int], ...] = (
    {"kr_rrn": 1},
    {"kr_rrn": 3, "phone": 1},
    {"kr_frn": 1},
    {"kr_passport": 1},
    {"bank_account": 1, "kr_brn": 1},
    {"phone": 2},
    {"email": 1},
    {"email": 2, "phone": 1},
    {"kr_driver_license": 1},
)
REDELIVERY_SHARE = 0.02
DELIVERY_JITTER_S = 20.0
LATE_SHARE = 0.003  # delivered 1-3 hours late, as after a gateway's outage
BUSY_DAY_SHARE = 0.03  # an ordinary day with twice the usual requests (a deadline)
BUSY_DAY_FACTOR = 2.0


@dataclass(frozen=True)
class Label:
    alert_type: str
    dedup_key: str
    first_event_id: str  # the first delivered of event_ids
    event_ids: frozenset[str]  # any of these may be the event that raises the alert
    note: str
    # False for an injected case too ambiguous to score either way (a spike on a user whose
    # earlier days were themselves busy): alerts for it are neither right nor wrong.
    scored: bool = True


@dataclass
class MisuseScenario:
    policies: PolicySet
    policy_document: dict[str, Any]  # what `policies` was parsed from (to write as YAML)
    deliveries: list[tuple[pb.UsageEvent, Decimal]]  # delivery order, redeliveries included
    labels: list[Label]
    start: date
    end: date  # inclusive
    governments: tuple[str, ...]
    staff: int
    unique_events: int
    redeliveries: int
    legit_outside_office: int  # normal events outside office hours, covered by a schedule
    seed: int


@dataclass
class Staff:
    government: str
    index: int
    user_id: str
    department: str
    rate: float  # mean requests per active day
    services: tuple[str, ...]
    weights: tuple[float, ...]  # cumulative, for random.choices
    developer: bool = False
    night_shift: bool = False
    role: str = "normal"  # normal | heavy | newcomer
    first_day: int = 0  # index into the period's days


@dataclass
class _Event:
    seconds: float
    event: pb.UsageEvent
    day: date  # local (KST)


@dataclass
class _Build:
    rng: random.Random
    policies: PolicySet
    days: list[date]
    events: list[_Event] = field(default_factory=list)
    labels: dict[tuple[str, str], tuple[set[str], str, bool]] = field(default_factory=dict)
    by_user_day: dict[tuple[str, str, date], list[str]] = field(default_factory=dict)  # requests
    active_counts: dict[tuple[str, str], dict[date, int]] = field(default_factory=dict)
    busy_windows: dict[tuple[str, str, date], list[tuple[float, float]]] = field(
        default_factory=dict
    )
    busy_days: set[tuple[str, str, date]] = field(default_factory=set)
    legit_outside_office: int = 0
    next_id: int = 0

    def label(
        self, alert_type: str, key: str, event_ids: Iterable[str], note: str, scored: bool = True
    ) -> None:
        ids, old_note, old_scored = self.labels.get((alert_type, key), (set(), note, scored))
        ids.update(event_ids)
        self.labels[(alert_type, key)] = (ids, old_note, old_scored and scored)

    def add(
        self,
        staff: Staff,
        seconds: float,
        service: str,
        *,
        provider: str | None = None,
        model: str = "",
        operation: str | None = None,
        usage: pb.Usage | None = None,
        account_kind: pb.AccountKind.ValueType = pb.ACCOUNT_KIND_ORGANIZATIONAL,
        pii: dict[str, int] | None = None,
        category: str = "",
        count_activity: bool = True,
        plain: bool = False,
    ) -> str:
        rng = self.rng
        self.next_id += 1
        event_id = f"{staff.government}:m{self.next_id:07d}"
        if service in API_SERVICES:
            provider = provider or API_SERVICES[service][0]
            model = model or API_SERVICES[service][1]
            operation = operation or "chat"
            usage = usage or pb.Usage(
                input_tokens=rng.randint(500, 6000),
                output_tokens=rng.randint(100, 1500),
                requests=1,
            )
        elif service in SERVICES:
            svc = SERVICES[service]
            provider = provider or svc.provider
            operation = operation or svc.operation
            usage = usage or seat_usage(svc, rng)
        assert provider is not None and operation is not None and usage is not None
        if not category and not plain and rng.random() < 0.5:
            category = rng.choice(WORK_CATEGORIES)
        if pii is None and not plain and rng.random() < 0.01:
            pii = {"kr_brn": 1}  # ignored by the policy: business numbers are public
        event = pb.UsageEvent(
            event_id=event_id,
            gateway_id=f"gw-{staff.government}-1",
            organization_id=staff.government,
            department_id=staff.department,
            user_id=staff.user_id,
            account_kind=account_kind,
            provider_name=provider,
            service_id=service,
            request_model=model,
            operation_name=operation,
            purpose="administrative-work",
            usage=usage,
        )
        if pii or category:
            event.risk.content_category = category
            if pii:
                event.risk.pii_findings.update(pii)
        event.event_time.seconds = int(seconds)
        event.event_time.nanos = int((seconds % 1) * 1e9)
        day = datetime.fromtimestamp(int(seconds), KST).date()
        self.events.append(_Event(seconds, event, day))
        if operation == "subscription":
            return event_id
        self.by_user_day.setdefault((staff.government, staff.user_id, day), []).append(event_id)
        if count_activity:
            days = self.active_counts.setdefault((staff.government, staff.user_id), {})
            days[day] = days.get(day, 0) + 1
        return event_id


def build_misuse_scenario(
    governments: Sequence[Government],
    catalog: PriceCatalog,
    *,
    scale: float = 0.4,
    weeks: int = 6,
    per_type: int = 40,
    seed: int = DEFAULT_SEED,
    start: date = DEFAULT_START,
    policy_document: dict[str, Any] | None = None,
) -> MisuseScenario:
    """The scenario for `governments` (from loadtests.scenario.governments_of), each with
    `scale` of its staff (at least 10), over `weeks` from `start`, with about `per_type`
    injected cases of each kind of misuse."""
    rng = random.Random(seed)
    base = policy_document or yaml.safe_load(POLICIES.read_text(encoding="utf-8"))
    days = [start + timedelta(days=n) for n in range(weeks * 7)]
    staff = _staff(governments, scale, rng)
    night = {g: s for g, members in staff.items() for s in members if s.night_shift}
    document = _with_overlay(base, night)
    policies = parse_policies(document, f"{POLICIES.name} + misuse scenario")
    build = _Build(rng, policies, days)
    habitual = _habitual_services(staff, policies, rng)
    _assign_services(staff, habitual, rng)
    cases = _Injections(build, staff, habitual, per_type)
    cases.choose_roles()
    for members in staff.values():
        for person in members:
            for index, day in enumerate(days):
                _normal_day(build, person, index, day, cases)
    _seed_habits(build, staff, habitual)
    _seat_charges(build, staff, policies, days)
    cases.inject()
    costs = {e.event.event_id: _cost(catalog, e.event) for e in build.events}
    deliveries = _deliveries(build, rng)
    position: dict[str, int] = {}
    for n, event in enumerate(deliveries):
        position.setdefault(event.event_id, n)
    labels = []
    for (alert_type, key), (ids, note, scored) in sorted(build.labels.items()):
        first = min(ids, key=lambda i: position[i])
        labels.append(Label(alert_type, key, first, frozenset(ids), note, scored))
    return MisuseScenario(
        policies=policies,
        policy_document=document,
        deliveries=[(e, costs[e.event_id]) for e in deliveries],
        labels=labels,
        start=days[0],
        end=days[-1],
        governments=tuple(staff),
        staff=sum(len(m) for m in staff.values()),
        unique_events=len(build.events),
        redeliveries=len(deliveries) - len(build.events),
        legit_outside_office=build.legit_outside_office,
        seed=seed,
    )


# --- staff and their habits ---------------------------------------------------------------


def _staff(
    governments: Sequence[Government], scale: float, rng: random.Random
) -> dict[str, list[Staff]]:
    out: dict[str, list[Staff]] = {}
    for gov in governments:
        count = max(10, round(gov.users * scale))
        members = []
        for n in range(count):
            rate = min(16.0, max(1.0, rng.lognormvariate(math.log(4.5), 0.55)))
            members.append(
                Staff(
                    gov.id, n, user_id(gov.id, n), DEPARTMENTS[n % len(DEPARTMENTS)], rate, (), ()
                )
            )
        members[3].night_shift = True  # a welfare call-centre night shift, by name
        for person in members:
            if person.department == "digital-policy" and person.index < 40:
                person.developer = True  # the first few in digital policy call the APIs
        out[gov.id] = members
    return out


def _habitual_services(
    staff: dict[str, list[Staff]], policies: PolicySet, rng: random.Random
) -> dict[tuple[str, str], list[str]]:
    """Each department's services: ChatGPT, some of the other subscriptions, APIs for IT."""
    habitual: dict[tuple[str, str], list[str]] = {}
    for gov, members in staff.items():
        sanctioned = policies.for_organization(gov).sanctioned_services
        subscriptions = sorted(s for s in sanctioned if s in SERVICES and s != "chatgpt")
        for department in sorted({m.department for m in members}):
            services = ["chatgpt"] + [s for s in subscriptions if rng.random() < 0.45]
            if department == "digital-policy":
                services += sorted(s for s in sanctioned if s in API_SERVICES)
            habitual[(gov, department)] = services
    return habitual


def _assign_services(
    staff: dict[str, list[Staff]],
    habitual: dict[tuple[str, str], list[str]],
    rng: random.Random,
) -> None:
    for members in staff.values():
        for person in members:
            options = habitual[(person.government, person.department)]
            chosen = ["chatgpt"] + [s for s in options[1:] if rng.random() < 0.6]
            if person.developer:
                chosen = sorted(set(chosen) | {s for s in options if s in API_SERVICES})
            weights = [
                4.0 if s in API_SERVICES else SERVICES[s].weight * 3 if s in SERVICES else 1.0
                for s in chosen
            ]
            person.services, person.weights = tuple(chosen), tuple(itertools.accumulate(weights))


# --- normal days ---------------------------------------------------------------------------


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=KST).timestamp()


def _windows(build: _Build, person: Staff, day: date) -> list[tuple[float, float, bool]]:
    """(start, end, is the office) of the person's working windows opening on `day`."""
    working = build.policies.for_organization(person.government).working_time
    holiday = working.holiday(day) is not None
    midnight = _midnight(day)
    out = []
    for schedule in working.schedules_for(person.department, person.user_id):
        is_office = schedule is working.office
        if (is_office and person.night_shift) or not schedule.works_on(day, holiday):
            continue
        start, end = schedule.bounds(day.toordinal())
        offset = midnight - day.toordinal() * 86_400
        out.append((start + offset, end + offset, is_office))
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _normal_day(build: _Build, person: Staff, index: int, day: date, cases: _Injections) -> None:
    rng = build.rng
    if index < person.first_day:
        return
    windows = _windows(build, person, day)
    if not windows:
        return
    office = any(w[2] for w in windows)
    special = cases.day_count(person, index, day)
    if special is not None:
        count = special
    elif person.role == "newcomer":
        return
    elif person.role == "heavy":
        count = rng.randint(60, 75) if office else 0
    else:
        if rng.random() > (0.85 if office else 0.45):
            return
        busy = rng.random() < BUSY_DAY_SHARE
        if busy:
            build.busy_days.add((person.government, person.user_id, day))
        count = _poisson(rng, person.rate * (BUSY_DAY_FACTOR if busy else 1.0))
    _sessions(build, person, day, windows, count)


def _sessions(
    build: _Build,
    person: Staff,
    day: date,
    windows: list[tuple[float, float, bool]],
    count: int,
) -> list[str]:
    rng = build.rng
    busy = build.busy_windows.setdefault((person.government, person.user_id, day), [])
    weights = [w[1] - w[0] for w in windows]
    ids: list[str] = []
    while count > 0:
        size = min(count, rng.randint(1, 5))
        count -= size
        for _ in range(20):
            start, end, is_office = rng.choices(windows, weights=weights)[0]
            if is_office and rng.random() < 0.08:
                # Early birds and late finishers, within the hour of grace.
                start, end = rng.choice(((start - 2400, start), (end, end + 2400)))
            first = rng.uniform(start, max(start, end - 660))
            gaps = [rng.uniform(20, 150) for _ in range(size - 1)]
            last = first + sum(gaps)
            if all(last + 60 < b0 or first - 60 > b1 for b0, b1 in busy):
                break
        else:
            continue  # no room left today
        busy.append((first, last))
        office_hours = _in_office(build, person, first) and _in_office(build, person, last)
        moment = first
        for gap in [0.0, *gaps]:
            moment += gap
            service = rng.choices(person.services, cum_weights=person.weights)[0]
            ids.append(build.add(person, moment, service))
            build.legit_outside_office += not office_hours
    return ids


def _in_office(build: _Build, person: Staff, seconds: float) -> bool:
    working = build.policies.for_organization(person.government).working_time
    local = datetime.fromtimestamp(seconds, KST)
    office = working.office
    if local.weekday() not in office.weekdays or working.holiday(local.date()) is not None:
        return False
    second = local.hour * 3600 + local.minute * 60 + local.second
    return office.start_second <= second < office.end_second


def _seed_habits(
    build: _Build,
    staff: dict[str, list[Staff]],
    habitual: dict[tuple[str, str], list[str]],
) -> None:
    """On the first working day every department uses each of its habitual services."""
    rng = build.rng
    first_day = next(d for d in build.days if _is_office_day(build, "seoul", d))
    for gov, members in staff.items():
        by_department: dict[str, list[Staff]] = defaultdict(list)
        for person in members:
            if person.role == "normal" and not person.night_shift:
                by_department[person.department].append(person)
        for department, people in sorted(by_department.items()):
            for service in habitual[(gov, department)]:
                users = [p for p in people if service in p.services] or people
                person = rng.choice(users)
                if service not in person.services:
                    person.services += (service,)
                    person.weights += (person.weights[-1] + 0.05,)
                moment = _midnight(first_day) + rng.uniform(10 * 3600, 11 * 3600)
                build.add(person, moment, service)


def _is_office_day(build: _Build, gov: str, day: date) -> bool:
    working = build.policies.for_organization(gov).working_time
    return day.weekday() in working.office.weekdays and working.holiday(day) is None


def _seat_charges(
    build: _Build, staff: dict[str, list[Staff]], policies: PolicySet, days: list[date]
) -> None:
    """Seat-months a billing connector reports on the 1st at 09:00 (a Sunday, a holiday)."""
    for index, day in enumerate(days):
        if day.day != 1:
            continue
        for gov, members in staff.items():
            sanctioned = policies.for_organization(gov).sanctioned_services
            n = 0
            for person in members:
                if person.first_day > index:
                    continue  # not on the staff yet
                for service in person.services:
                    if service in SERVICES and service in sanctioned:
                        n += 1
                        build.add(
                            person,
                            _midnight(day) + 9 * 3600 + n,
                            service,
                            operation="subscription",
                            usage=pb.Usage(seat_months=1),
                            plain=True,
                        )


# --- injected misuse -----------------------------------------------------------------------


class _Injections:
    """Chooses who misbehaves when, shapes their days, and adds the misuse with labels."""

    def __init__(
        self,
        build: _Build,
        staff: dict[str, list[Staff]],
        habitual: dict[tuple[str, str], list[str]],
        per_type: int,
    ) -> None:
        self.build = build
        self.staff = staff
        self.habitual = habitual
        self.per_type = per_type
        self.rng = random.Random(build.rng.getrandbits(64))
        self.special: dict[tuple[str, str, int], int] = {}  # (gov, user, day index) -> count
        self.volume_days: list[tuple[Staff, int]] = []
        self.reserved: set[tuple[str, str]] = set()

    # Roles are chosen before normal days are generated, since they shape them.
    def choose_roles(self) -> None:
        rng = self.rng
        big = [
            (gov, department, people)
            for gov, members in self.staff.items()
            for department, people in _departments(members).items()
            if len(people) >= 10
        ]
        office_days = [i for i, d in enumerate(self.build.days) if self._office_day(d)]
        wanted = max(1, self.per_type // 2)
        for n in range(min(wanted, len(big) * 2)):
            gov, department, people = big[n % len(big)]
            free = [p for p in people if self._free(p) and not p.developer]
            if not free:
                continue
            heavy = rng.choice(free)
            heavy.role = "heavy"
            self.reserved.add((gov, heavy.user_id))
            # A newcomer: a new member of staff making 60-80 requests a day for 2-3 days.
            newcomer_index = len(self.staff[gov]) + 10_000 + n
            template = rng.choice(free)
            start = rng.choice(office_days[len(office_days) // 3 : -3])
            newcomer = Staff(
                gov,
                newcomer_index,
                user_id(gov, newcomer_index),
                department,
                5.0,
                template.services,
                template.weights,
                role="newcomer",
                first_day=start,
            )
            self.staff[gov].append(newcomer)
            self.reserved.add((gov, newcomer.user_id))
            month = self.build.days[start].month
            for day in [i for i in office_days if i >= start][:3]:
                if self.build.days[day].month == month:
                    self.special[(gov, newcomer.user_id, day)] = rng.randint(60, 80)
        # Light users with a spike late in the period (checked against their history later).
        late = office_days[len(office_days) * 2 // 3 :]
        light = [
            p
            for members in self.staff.values()
            for p in members
            if p.role == "normal" and 2.0 <= p.rate <= 3.0 and self._free(p) and not p.developer
        ]
        for person in rng.sample(light, min(len(light), self.per_type)):
            day = rng.choice(late)
            self.special[(person.government, person.user_id, day)] = rng.randint(26, 34)
            self.volume_days.append((person, day))
            self.reserved.add((person.government, person.user_id))

    def day_count(self, person: Staff, index: int, day: date) -> int | None:
        return self.special.get((person.government, person.user_id, index))

    def inject(self) -> None:
        self._heavy_and_newcomers()
        self._volume_spikes()
        self._cost_spikes()
        self._bursts()
        self._service_misuse()
        self._off_hours()
        self._new_services()

    # --- helpers

    def _office_day(self, day: date) -> bool:
        return _is_office_day(self.build, "seoul", day)

    def _free(self, person: Staff) -> bool:
        return (
            (person.government, person.user_id) not in self.reserved
            and person.role == "normal"
            and not person.night_shift
        )

    def _pick(self, predicate: Callable[[Staff], bool] | None = None) -> Staff | None:
        """Someone free for a new case (or None): not already part of another case."""
        candidates = [
            p
            for members in self.staff.values()
            for p in members
            if self._free(p) and (predicate is None or predicate(p))
        ]
        return self.rng.choice(candidates) if candidates else None

    def _any(self, predicate: Callable[[Staff], bool] | None = None) -> Staff:
        """Anyone not part of a stateful case (single events do not disturb baselines)."""
        person = self._pick(predicate)
        if person is None:
            raise ValueError("the scenario has too few staff for its cases; raise the scale")
        return person

    def _work_moment(self, day: date) -> float:
        return _midnight(day) + self.rng.uniform(10 * 3600, 15.5 * 3600)

    def _office_day_choice(self, earliest: int = 0) -> date:
        days = [d for d in self.build.days[earliest:] if self._office_day(d)]
        return self.rng.choice(days)

    def _day_label(self, day: date) -> str:
        return day.isoformat()

    # --- stateful misuse

    def _heavy_and_newcomers(self) -> None:
        build = self.build
        roles = {
            (p.government, p.user_id): p
            for members in self.staff.values()
            for p in members
            if p.role in ("heavy", "newcomer")
        }
        months: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for (gov, user, day), ids in build.by_user_day.items():
            if (gov, user) in roles:
                months[(gov, user, f"{day:%Y-%m}")].update(ids)
        for (gov, user, month), event_ids in sorted(months.items()):
            person = roles[(gov, user)]
            key = dedup_key("peer_spike", gov, person.department, user, month)
            build.label("peer_spike", key, event_ids, f"{person.role} far above peers")

    def _volume_spikes(self) -> None:
        build = self.build
        for person, index in self.volume_days:
            day = build.days[index]
            history = build.active_counts.get((person.government, person.user_id), {})
            earlier = [c for d, c in history.items() if d < day]
            spike = history.get(day, 0)
            # A spike against one's own baseline needs a baseline, and to be far above it.
            clear = len(earlier) >= 7 and spike >= 2 * max(earlier)
            key = dedup_key("volume_spike", person.government, person.user_id, day.isoformat())
            ids = build.by_user_day[(person.government, person.user_id, day)]
            note = f"{spike} requests vs at most {max(earlier, default=0)} on {len(earlier)} days"
            build.label("volume_spike", key, ids, note, scored=clear)

    def _cost_spikes(self) -> None:
        build, rng = self.build, self.rng
        developers = [
            p
            for members in self.staff.values()
            for p in members
            if p.developer and self._free(p) and "openai-api" in p.services
        ]
        office_days = [i for i, d in enumerate(build.days) if self._office_day(d)]
        late = office_days[len(office_days) * 2 // 3 :]
        for person in rng.sample(developers, min(len(developers), max(1, self.per_type // 3))):
            history = build.active_counts.get((person.government, person.user_id), {})
            index = rng.choice(late)
            day = build.days[index]
            if sum(1 for d in history if d < day) < 7:
                continue
            self.reserved.add((person.government, person.user_id))
            ids = []
            for _ in range(rng.randint(2, 3)):
                usage = pb.Usage(
                    input_tokens=rng.randint(1_500_000, 2_000_000),
                    output_tokens=rng.randint(80_000, 120_000),
                    requests=1,
                )
                ids.append(build.add(person, self._work_moment(day), "openai-api", usage=usage))
            key = dedup_key("volume_spike", person.government, person.user_id, day.isoformat())
            ids = build.by_user_day[(person.government, person.user_id, day)]
            build.label("volume_spike", key, ids, "large API calls (cost)")

    def _bursts(self) -> None:
        build, rng = self.build, self.rng
        for n in range(self.per_type):
            person = self._pick(lambda p: 8.0 <= p.rate <= 11.0 and not p.developer)
            if person is None:
                break
            self.reserved.add((person.government, person.user_id))
            day = self._office_day_choice()
            while (person.government, person.user_id, day) in build.busy_days:
                day = self._office_day_choice()
            start = self._work_moment(day)
            if n % 2 == 0:
                count, span = rng.randint(14, 18), rng.uniform(25, 45)
                times = sorted(start + rng.uniform(0, span) for _ in range(count))
                note = f"{count} requests in {span:.0f} s"
            else:
                count, interval = rng.randint(12, 16), rng.uniform(20, 120)
                gaps = [interval * rng.uniform(0.995, 1.005) for _ in range(count - 1)]
                times = list(itertools.accumulate(gaps, initial=start))
                note = f"{count} requests every {interval:.0f} s"
            service = person.services[0]
            ids = [build.add(person, t, service, count_activity=False) for t in times]
            key = dedup_key("automation_burst", person.government, person.user_id, day.isoformat())
            build.label("automation_burst", key, ids, note)

    # --- stateless misuse

    def _service_misuse(self) -> None:
        build, rng = self.build, self.rng
        policies = build.policies
        for n in range(self.per_type):
            # DeepSeek, banned for every government.
            person = self._any()
            day = self._office_day_choice()
            ids = [
                build.add(
                    person,
                    self._work_moment(day),
                    "deepseek",
                    provider="deepseek",
                    model="deepseek-chat",
                    operation="chat",
                    usage=pb.Usage(input_tokens=rng.randint(200, 3000), output_tokens=300),
                )
                for _ in range(rng.randint(1, 3))
            ]
            key = dedup_key(
                "banned_provider", person.government, person.user_id, "deepseek", day.isoformat()
            )
            build.label("banned_provider", key, ids, "DeepSeek")
            # A subscription service the government has not sanctioned.
            person = self._any(
                lambda p: any(
                    s not in policies.for_organization(p.government).sanctioned_services
                    for s in SERVICES
                )
            )
            sanctioned = policies.for_organization(person.government).sanctioned_services
            service = rng.choice(sorted(s for s in SERVICES if s not in sanctioned))
            day = self._office_day_choice()
            ids = [
                build.add(person, self._work_moment(day), service) for _ in range(rng.randint(1, 3))
            ]
            key = dedup_key(
                "unsanctioned_service", person.government, person.user_id, service, day.isoformat()
            )
            build.label("unsanctioned_service", key, ids, service)
            # ChatGPT through a personal account.
            person = self._any()
            day = self._office_day_choice()
            ids = [
                build.add(
                    person,
                    self._work_moment(day),
                    "chatgpt",
                    account_kind=pb.ACCOUNT_KIND_PERSONAL,
                )
                for _ in range(rng.randint(1, 2))
            ]
            key = dedup_key(
                "personal_account", person.government, person.user_id, "chatgpt", day.isoformat()
            )
            build.label("personal_account", key, ids, "personal ChatGPT account")
            # Personal information in a prompt.
            person = self._any()
            day = self._office_day_choice()
            findings = PII_CASES[n % len(PII_CASES)]
            event_id = build.add(
                person, self._work_moment(day), person.services[0], pii=dict(findings)
            )
            pii_policy = policies.for_organization(person.government).detectors.pii_sent
            for kind in sorted(findings):
                if pii_policy.severity_of(kind) is None:
                    continue  # e.g. business numbers, which the policy ignores
                key = dedup_key(
                    "pii_sent", person.government, person.user_id, kind, day.isoformat()
                )
                build.label("pii_sent", key, [event_id], f"{findings[kind]} {kind}")
            # Non-work content.
            person = self._any()
            day = self._office_day_choice()
            category = NON_WORK_CATEGORIES[n % len(NON_WORK_CATEGORIES)]
            ids = [
                build.add(person, self._work_moment(day), person.services[0], category=category)
                for _ in range(rng.randint(1, 3))
            ]
            key = dedup_key(
                "non_work_content", person.government, person.user_id, category, day.isoformat()
            )
            build.label("non_work_content", key, ids, category)
            # Requests the gateway guard denied, tried again and again within minutes.
            person = self._any()
            day = self._office_day_choice()
            start = self._work_moment(day)
            ids = []
            for attempt in range(rng.randint(5, 7)):
                ids.append(build.add(person, start + attempt * 40, person.services[0]))
                denied = build.events[-1].event
                denied.decision = pb.DECISION_DENY
                denied.decision_rule_ids.append("document.confidential")
            key = dedup_key("repeated_denials", person.government, person.user_id, day.isoformat())
            build.label("repeated_denials", key, ids, "a confidential document, resent")

    def _off_hours(self) -> None:
        build, rng = self.build, self.rng
        days = build.days
        weekends = [d for d in days if d.weekday() >= 5]
        holidays = [
            d for d in days if d.weekday() < 5 and build.policies.defaults.working_time.holiday(d)
        ]
        for n in range(self.per_type):
            person = self._pick(lambda p: len(_schedules(build, p)) == 1)
            if person is None:
                break
            kind = n % 3
            if kind == 0 or (kind == 2 and not holidays):
                day = self._office_day_choice()
                first = _midnight(day) + rng.uniform(19.5 * 3600, 22.5 * 3600)
                note = "evening"
            elif kind == 1:
                day = rng.choice(weekends)
                first = _midnight(day) + rng.uniform(10 * 3600, 17 * 3600)
                note = "weekend"
            else:
                day = rng.choice(holidays)
                first = _midnight(day) + rng.uniform(10 * 3600, 17 * 3600)
                note = f"holiday {build.policies.defaults.working_time.holiday(day)}"
            ids = []
            moment = first
            for _ in range(rng.randint(1, 4)):
                ids.append(build.add(person, moment, person.services[0]))
                moment += rng.uniform(30, 300)
            key = dedup_key("off_hours", person.government, person.user_id, day.isoformat())
            build.label("off_hours", key, ids, note)

    def _new_services(self) -> None:
        build, rng = self.build, self.rng
        candidates = []
        for (gov, department), services in sorted(self.habitual.items()):
            sanctioned = build.policies.for_organization(gov).sanctioned_services
            unused = sorted(s for s in sanctioned if s not in services)
            for service in unused:
                candidates.append((gov, department, service))
        earliest = 18
        for gov, department, service in rng.sample(candidates, min(len(candidates), self.per_type)):
            people = [p for p in self.staff[gov] if p.department == department and self._free(p)]
            if not people:
                continue
            person = rng.choice(people)
            day = self._office_day_choice(earliest)
            ids = [
                build.add(person, self._work_moment(day), service) for _ in range(rng.randint(1, 3))
            ]
            key = dedup_key("new_service_in_department", gov, department, service)
            build.label("new_service_in_department", key, ids, service)


def _departments(members: list[Staff]) -> dict[str, list[Staff]]:
    out: dict[str, list[Staff]] = defaultdict(list)
    for person in members:
        out[person.department].append(person)
    return dict(sorted(out.items()))


def _schedules(build: _Build, person: Staff) -> tuple[Schedule, ...]:
    working = build.policies.for_organization(person.government).working_time
    return working.schedules_for(person.department, person.user_id)


# --- pricing, delivery ---------------------------------------------------------------------


def _cost(catalog: PriceCatalog, event: pb.UsageEvent) -> Decimal:
    try:
        return catalog.rate(event).cost_krw
    except UnpricedError:
        return Decimal(0)  # e.g. DeepSeek: no price, still detected


def _deliveries(build: _Build, rng: random.Random) -> list[pb.UsageEvent]:
    order: list[tuple[float, int, pb.UsageEvent]] = []
    for n, item in enumerate(sorted(build.events, key=lambda e: (e.seconds, e.event.event_id))):
        at = item.seconds + rng.uniform(0, DELIVERY_JITTER_S)
        if rng.random() < LATE_SHARE:
            at += rng.uniform(3600, 3 * 3600)
        order.append((at, 2 * n, item.event))
        if rng.random() < REDELIVERY_SHARE:
            order.append((at + rng.uniform(1, 600), 2 * n + 1, item.event))
    order.sort(key=lambda o: (o[0], o[1]))
    return [event for _, _, event in order]


def _with_overlay(base: dict[str, Any], night: dict[str, Staff]) -> dict[str, Any]:
    """The shipped policy, plus a named night shift per government."""
    document = {k: v for k, v in base.items() if k != "organizations"}
    defaults = base.get("defaults", {})
    organizations: dict[str, Any] = {
        k: dict(v or {}) for k, v in base.get("organizations", {}).items()
    }
    for gov, person in night.items():
        entry = organizations.setdefault(gov, {})
        schedules = list(entry.get("schedules", defaults.get("schedules", [])))
        schedules.append(
            {
                "name": "welfare-call-centre-night-shift",
                "users": [person.user_id],
                "start": "22:00",
                "end": "07:00",
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "holidays": True,
            }
        )
        entry["schedules"] = schedules
    document["organizations"] = organizations
    return document
