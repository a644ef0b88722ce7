"""Working time: office hours, public and organisation holidays, and the schedules of people
who work other hours (remote work, overtime, shifts), as the policy's `working_hours` and
`schedules` give them (the file's format: organization.py).

The office hours' grace (60 minutes by default) covers those who come early or stay late; a
schedule has none unless it says so, since its hours are the ones someone agreed for that work.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import holidays

from civicmeter.policy.document import ID, NAME, as_list, check_keys, integer, mapping, names
from civicmeter.policy.yaml_source import At

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
_DAY_SECONDS = 86_400
_WORKING_HOURS_KEYS = (
    "start",
    "end",
    "grace_minutes",
    "weekdays",
    "holidays",
    "holiday_subdivision",
    "extra_holidays",
)
_SCHEDULE_KEYS = (
    "name",
    "departments",
    "users",
    "start",
    "end",
    "weekdays",
    "holidays",
    "valid_from",
    "valid_until",
    "grace_minutes",
)


@dataclass(frozen=True)
class Schedule:
    """When some people may work: the office hours, or remote work, overtime or a shift.

    `end_second <= start_second` means the window runs past midnight into the next day.
    `grace_seconds` extends the window on each side: the office hours' grace (60 minutes by
    default) covers those who come early or stay late without a schedule; a schedule has none
    unless it says so, since its hours are the ones someone agreed for that work.
    """

    name: str
    start: time
    end_second: int  # seconds after local midnight, 1..86400
    weekdays: frozenset[int]  # 0 = Monday
    on_holidays: bool = False
    departments: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    valid_from: date | None = None
    valid_until: date | None = None
    grace_seconds: int = 0
    start_second: int = field(init=False, repr=False)  # seconds after local midnight
    crosses_midnight: bool = field(init=False, repr=False)
    _first: int = field(init=False, repr=False)  # validity as date ordinals
    _last: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        start_second = self.start.hour * 3600 + self.start.minute * 60
        object.__setattr__(self, "start_second", start_second)
        object.__setattr__(self, "crosses_midnight", self.end_second <= start_second)
        first = self.valid_from.toordinal() if self.valid_from else 0
        object.__setattr__(self, "_first", first)
        object.__setattr__(
            self, "_last", self.valid_until.toordinal() if self.valid_until else 10**7
        )

    def works_on(self, day: date, is_holiday: bool) -> bool:
        """Whether the window opens on `day` (it may close on the next)."""
        if day.weekday() not in self.weekdays or (is_holiday and not self.on_holidays):
            return False
        return self._first <= day.toordinal() <= self._last

    def bounds(self, ordinal: int) -> tuple[int, int]:
        """The window opening on day `ordinal`, in local seconds since day 1 (date.toordinal)."""
        base = ordinal * _DAY_SECONDS
        end = self.end_second + (_DAY_SECONDS if self.crosses_midnight else 0)
        return base + self.start_second, base + end


OffHoursReason = Literal["after_hours", "weekend", "holiday"]


@dataclass(frozen=True)
class OffHours:
    reason: OffHoursReason
    local_time: datetime
    holiday: str | None = None  # the holiday's English name when reason is "holiday"
    holiday_ko: str | None = None


@functools.lru_cache(maxsize=64)
def _holiday_calendar(country: str, subdivision: str | None, language: str) -> Any:
    return holidays.country_holidays(country, subdiv=subdivision, language=language)


@functools.lru_cache(maxsize=16_384)
def _holiday_name(country: str, subdivision: str | None, language: str, day: date) -> str | None:
    name = _holiday_calendar(country, subdivision, language).get(day)
    return str(name) if name is not None else None


@dataclass(frozen=True)
class WorkingTime:
    """Office hours, public holidays and the schedules of people who work other hours."""

    time_zone: ZoneInfo
    office: Schedule
    holiday_country: str | None = "KR"
    holiday_subdivision: str | None = None
    extra_holidays: Mapping[date, str] = field(default_factory=lambda: MappingProxyType({}))
    schedules: tuple[Schedule, ...] = ()
    _by_department: Mapping[str, tuple[Schedule, ...]] = field(init=False, repr=False)
    _by_user: Mapping[str, tuple[Schedule, ...]] = field(init=False, repr=False)
    # Holiday by date ordinal, filled as days are asked about (bounded: cleared when large).
    _holidays: dict[int, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_holidays", {})
        by_department: dict[str, list[Schedule]] = {}
        by_user: dict[str, list[Schedule]] = {}
        for schedule in self.schedules:
            for department in sorted(schedule.departments):
                by_department.setdefault(department, []).append(schedule)
            for user in sorted(schedule.users):
                by_user.setdefault(user, []).append(schedule)
        object.__setattr__(
            self,
            "_by_department",
            MappingProxyType({k: tuple(v) for k, v in by_department.items()}),
        )
        object.__setattr__(
            self, "_by_user", MappingProxyType({k: tuple(v) for k, v in by_user.items()})
        )

    @property
    def grace(self) -> timedelta:
        """The office hours' grace on each side (a schedule has its own)."""
        return timedelta(seconds=self.office.grace_seconds)

    def holiday(self, day: date, language: str = "en") -> str | None:
        """The name of the public or organisation holiday on `day`, or None."""
        extra = self.extra_holidays.get(day)
        if extra is not None:
            return extra
        if self.holiday_country is None:
            return None
        return _holiday_name(self.holiday_country, self.holiday_subdivision, language, day)

    def schedules_for(self, department: str, user: str) -> tuple[Schedule, ...]:
        """The office hours first, then the department's and the user's own schedules."""
        if not self.schedules:
            return (self.office,)
        return (self.office, *self._by_department.get(department, ()), *self._by_user.get(user, ()))

    def is_holiday(self, ordinal: int) -> bool:
        """Whether the day (as date.toordinal()) is a public or organisation holiday."""
        cache = self._holidays
        if ordinal not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[ordinal] = self.holiday(date.fromordinal(ordinal))
        return cache[ordinal] is not None

    def covers(self, ordinal: int, second: int, department: str, user: str) -> bool:
        """Whether local day `ordinal` (date.toordinal()) at `second` after midnight is in a
        working window of this person, each window's grace included: the fast form of
        off_hours."""
        moment = ordinal * _DAY_SECONDS + second
        for schedule in self.schedules_for(department, user):
            grace = schedule.grace_seconds
            # The window opening today, or yesterday's past midnight, or tomorrow's grace.
            for day in (ordinal, ordinal - 1, ordinal + 1):
                if (
                    (day + 6) % 7 not in schedule.weekdays
                    or not schedule._first <= day <= schedule._last
                    or (not schedule.on_holidays and self.is_holiday(day))
                ):
                    continue
                start, end = schedule.bounds(day)
                if start - grace <= moment < end + grace:
                    return True
        return False

    def off_hours(self, when: datetime, department: str, user: str) -> OffHours | None:
        """None when `when` falls in a working window of this person (grace included);
        otherwise why it does not: a public holiday, a day off (weekend) or after hours."""
        local = when.astimezone(self.time_zone)
        today = local.date()
        second = local.hour * 3600 + local.minute * 60 + local.second
        if self.covers(today.toordinal(), second, department, user):
            return None
        holiday_today = self.holiday(today)
        if holiday_today is not None and not self.office.on_holidays:
            return OffHours("holiday", local, holiday_today, self.holiday(today, "ko"))
        if today.weekday() not in self.office.weekdays:
            return OffHours("weekend", local)
        return OffHours("after_hours", local)


def parse_working_time(raw: Mapping[str, Any], zone: ZoneInfo, at: At) -> WorkingTime:
    """The working time of an organisation's block `raw` (at `at`): its `working_hours` and
    `schedules`, in `zone`."""
    hours_at = at.key(raw, "working_hours")
    block = mapping(hours_at, raw.get("working_hours", {}))
    check_keys(hours_at, block, _WORKING_HOURS_KEYS)
    start = _clock(hours_at.key(block, "start"), block.get("start", "09:00"), end=False)
    end = _clock(hours_at.key(block, "end"), block.get("end", "18:00"), end=True)
    weekdays = _weekdays(hours_at.key(block, "weekdays"), block.get("weekdays", list(WEEKDAYS[:5])))
    grace = integer(hours_at.key(block, "grace_minutes"), block.get("grace_minutes", 60), 0, 720)
    country = block.get("holidays", "KR")
    subdivision = block.get("holiday_subdivision")
    if country is not None:
        if not isinstance(country, str) or country not in holidays.list_supported_countries():
            hours_at.key(block, "holidays").fail(
                f"{country!r} is not a country code the holidays package knows "
                "(e.g. KR), or null for none"
            )
        if subdivision is not None:
            known = holidays.list_supported_countries()[country]
            if not isinstance(subdivision, str) or subdivision not in known:
                hours_at.key(block, "holiday_subdivision").fail(
                    f"{subdivision!r} is not one of {known}"
                )
    elif subdivision is not None:
        hours_at.key(block, "holiday_subdivision").fail("needs holidays (a country code)")
    office = Schedule(
        "office",
        start.at,
        end.seconds,
        weekdays,
        departments=frozenset(),
        users=frozenset(),
        grace_seconds=grace * 60,
    )
    schedules: list[Schedule] = []
    schedules_at = at.key(raw, "schedules")
    raw_schedules = raw.get("schedules", [])
    if not isinstance(raw_schedules, list):
        schedules_at.fail("must be a list")
    seen: set[str] = set()
    for index, entry in enumerate(raw_schedules):
        entry_at = schedules_at.item(raw_schedules, index)
        schedule = _parse_schedule(entry_at, entry, weekdays)
        if schedule.name in seen:
            entry_at.key(entry, "name").fail(f"{schedule.name!r} appears twice")
        seen.add(schedule.name)
        schedules.append(schedule)
    return WorkingTime(
        time_zone=zone,
        office=office,
        holiday_country=country,
        holiday_subdivision=subdivision,
        extra_holidays=_extra_holidays(
            hours_at.key(block, "extra_holidays"), block.get("extra_holidays", {})
        ),
        schedules=tuple(schedules),
    )


def _parse_schedule(at: At, entry: Any, office_weekdays: frozenset[int]) -> Schedule:
    block = mapping(at, entry)
    check_keys(at, block, _SCHEDULE_KEYS)
    name = block.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        at.key(block, "name").fail("must be a short lower-case name, e.g. it-remote-work")
    departments = names(at.key(block, "departments"), block.get("departments", []), ID)
    users_at = at.key(block, "users")
    listed = as_list(users_at, block.get("users"))
    for index, user in enumerate(listed):
        if isinstance(user, str) and "@" in user:
            users_at.item(listed, index).fail(
                "must be a pseudonymised user id (keyed HMAC), not an e-mail"
            )
    users = names(users_at, block.get("users", []), ID)
    if not departments and not users:
        at.fail("names no departments and no users (for everyone, change working_hours)")
    start = _clock(at.key(block, "start"), block.get("start"), end=False)
    end = _clock(at.key(block, "end"), block.get("end"), end=True)
    valid_from = _date(at.key(block, "valid_from"), block.get("valid_from"), optional=True)
    valid_until = _date(at.key(block, "valid_until"), block.get("valid_until"), optional=True)
    if valid_from and valid_until and valid_until < valid_from:
        at.key(block, "valid_until").fail("is before valid_from")
    on_holidays = block.get("holidays", False)
    if not isinstance(on_holidays, bool):
        at.key(block, "holidays").fail("must be true or false (works on public holidays)")
    grace = block.get("grace_minutes", 0)  # 0 unless the schedule gives one
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 720:
        at.key(block, "grace_minutes").fail(
            f"must be a whole number of minutes between 0 and 720, got {grace!r}"
        )
    return Schedule(
        name=name,
        start=start.at,
        end_second=end.seconds,
        weekdays=_weekdays(at.key(block, "weekdays"), block["weekdays"])
        if "weekdays" in block
        else office_weekdays,
        on_holidays=on_holidays,
        departments=frozenset(departments),
        users=frozenset(users),
        valid_from=valid_from,
        valid_until=valid_until,
        grace_seconds=grace * 60,
    )


@dataclass(frozen=True)
class _Clock:
    at: time
    seconds: int


def _clock(at: At, value: Any, *, end: bool) -> _Clock:
    if isinstance(value, int) and not isinstance(value, bool):
        at.fail('must be a quoted "HH:MM" string (YAML reads unquoted 18:00 as a number)')
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        at.fail(f'must be a time "HH:MM" (00:00 to 24:00), got {value!r}')
    hour, minute = int(value[:2]), int(value[3:])
    if hour == 24 and (minute or not end):
        at.fail("24:00 is only valid as an end time")
    seconds = hour * 3600 + minute * 60
    if end and seconds == 0:
        seconds = _DAY_SECONDS  # an end at 00:00 is midnight at the end of the day
    return _Clock(time(hour % 24, minute), seconds)


def _weekdays(at: At, value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        at.fail(f"must be a non-empty list of {', '.join(WEEKDAYS)}")
    days: set[int] = set()
    for index, day in enumerate(value):
        if day not in WEEKDAYS:
            at.item(value, index).fail(f"{day!r} is not one of {', '.join(WEEKDAYS)}")
        days.add(WEEKDAYS.index(day))
    return frozenset(days)


def _date(at: At, value: Any, *, optional: bool = False) -> date | None:
    if value is None and optional:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    at.fail(f"must be a date YYYY-MM-DD, got {value!r}")


def _extra_holidays(at: At, value: Any) -> Mapping[date, str]:
    days: dict[date, str] = {}
    if isinstance(value, list):
        for index, item in enumerate(value):
            day = _date(at.item(value, index), item)
            assert day is not None
            days[day] = "organisation holiday"
    elif isinstance(value, dict):
        for item, name in value.items():
            day = _date(at.label(value, item), item)
            assert day is not None
            if not isinstance(name, str) or not name.strip():
                at.key(value, item).fail("the holiday's name must be a string")
            days[day] = name
    elif value is not None:
        at.fail("must be a list of dates or a mapping of date to name")
    return MappingProxyType(days)
