"""Per-organisation detection policy, loaded from a versioned YAML file.

Every organisation starts from `defaults`; an entry under `organizations` (keyed by
organisation id: seoul, busan, ... jeju) overrides it. Mappings merge key by key, lists and
values replace, except `banned_providers`, which only ever adds: what the defaults ban (and
DeepSeek, banned for every government) stays banned.

    version: "2024-09"
    defaults:
      time_zone: Asia/Seoul
      banned_providers: [deepseek]
      sanctioned_services: [chatgpt, openai-api]      # service ids as in config/prices.yaml
      account_kinds: [organizational]                 # personal accounts are flagged
      working_hours:
        start: "09:00"                                # quoted: YAML reads 18:00 as a number
        end: "18:00"
        grace_minutes: 60                             # each side
        weekdays: [mon, tue, wed, thu, fri]
        holidays: KR                                  # the `holidays` package's country code
        extra_holidays: {2024-04-03: Jeju 4·3 Memorial Day}
      schedules:                                      # remote work, overtime, shifts
        - {name: it-remote, departments: [digital-policy], start: "07:00", end: "22:00"}
        - {name: night, users: [u_3f9a...], start: "22:00", end: "07:00", holidays: true,
           grace_minutes: 30}                         # default 0: a schedule's hours are exact
      non_work_categories: [entertainment, gaming, dating, shopping, "personal.*"]
      detectors:
        volume_spike: {warmup_days: 7, factor: 5, mad_multiplier: 6, min_requests: 20}
        pii_sent: {severity: medium, types: {kr_rrn: high, phone: medium, kr_brn: ignore}}
        budget_forecast: {severity: medium, min_overrun_percent: 5}
      budgets:                                        # Asia/Seoul months and calendar years
        monthly_krw: "5000000"
        yearly_krw: "55000000"                        # the fiscal year (the calendar year)
        departments: {welfare: "800000", it: {monthly_krw: "900000", yearly_krw: "9000000"}}
        thresholds: {50: low, 80: medium, 100: high}  # or [50, 80, 100]
        forecast: {lookback_days: 7}                  # the run-rate's window
      alerts:
        webhooks: {critical: [{env: CIVICMETER_WEBHOOK_SECURITY}], high: ["https://..."]}
    organizations:
      seoul: {sanctioned_services: [chatgpt, claude, ...], budgets: {monthly_krw: "5000000"}}

Budget periods are Asia/Seoul months and calendar years (the billing rollups' calendar),
whatever the organisation's time_zone. Loading validates everything; an error names the file,
the entry and the reason.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from civicmeter.api.severity import SEVERITIES, Severity
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.enforcement import Enforcement, parse_enforcement
from civicmeter.policy.yaml_source import At, SourceError, parse_yaml

# Banned for every government (central and local government blocked it); no policy unbans it.
ALWAYS_BANNED_PROVIDERS = frozenset({"deepseek"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ACCOUNT_KINDS = {
    "organizational": pb.ACCOUNT_KIND_ORGANIZATIONAL,
    "personal": pb.ACCOUNT_KIND_PERSONAL,
}
DETECTOR_NAMES: tuple[str, ...] = (
    "banned_provider",
    "unsanctioned_service",
    "personal_account",
    "pii_sent",
    "off_hours",
    "volume_spike",
    "peer_spike",
    "automation_burst",
    "non_work_content",
    "new_service_in_department",
    "repeated_denials",
)
# Raised by the billing service from the stored ledger (seat charges and re-rating included),
# not by the stream's detectors; the `detectors` block turns them on and off all the same.
BUDGET_ALERT_TYPES: tuple[str, ...] = ("budget_threshold", "budget_forecast")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CATEGORY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}(\.\*)?")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_HHMM = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
_DAY_SECONDS = 86_400
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file, the entry and the reason."""


class PolicySourceError(SourceError, PolicyError):
    """A policy error that also knows the line (the file's YAML and `enforcement` blocks)."""


# --- working time ------------------------------------------------------------------------


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


# --- detectors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorToggle:
    enabled: bool = True
    severity: Severity = "medium"


@dataclass(frozen=True)
class PiiSettings:
    enabled: bool = True
    severity: Severity = "medium"  # for finding types not listed in `types`
    types: Mapping[str, Severity | None] = field(
        default_factory=lambda: MappingProxyType(
            {
                "kr_rrn": "high",
                "kr_frn": "high",
                "kr_passport": "high",
                "kr_driver_license": "high",
                "bank_account": "high",
                "phone": "medium",
                "email": "medium",
                "kr_brn": None,  # business numbers are public; procurement work is full of them
            }
        )
    )

    def severity_of(self, kind: str) -> Severity | None:
        """The severity of a finding type, or None when the policy ignores it."""
        return self.types.get(kind, self.severity)


@dataclass(frozen=True)
class VolumeSpikeSettings:
    enabled: bool = True
    severity: Severity = "medium"
    warmup_days: int = field(default=7, metadata={"min": 1, "max": 365})
    history_days: int = field(default=28, metadata={"min": 1, "max": 365})
    factor: float = field(default=5.0, metadata={"min": 1.0})
    mad_multiplier: float = field(default=6.0, metadata={"min": 0.0})
    min_requests: int = field(default=20, metadata={"min": 1})
    min_cost_krw: Decimal = Decimal("10000")


@dataclass(frozen=True)
class PeerSpikeSettings:
    enabled: bool = True
    severity: Severity = "medium"
    min_peers: int = field(default=5, metadata={"min": 2})
    peer_warmup_days: int = field(default=3, metadata={"min": 1, "max": 365})
    factor: float = field(default=6.0, metadata={"min": 1.0})
    mad_multiplier: float = field(default=6.0, metadata={"min": 0.0})
    min_requests: int = field(default=50, metadata={"min": 1})


@dataclass(frozen=True)
class AutomationBurstSettings:
    enabled: bool = True
    severity: Severity = "medium"
    # More than `max_requests` requests within `window_seconds`...
    max_requests: int = field(default=12, metadata={"min": 2, "max": 10_000})
    window_seconds: int = field(default=60, metadata={"min": 1, "max": 86_400})
    # ... or `regular_intervals` consecutive gaps this alike (coefficient of variation), or as
    # many with the person's own requests in between when chance cannot explain them (see
    # processor/detection/detectors/automation_burst.py).
    regular_intervals: int = field(default=10, metadata={"min": 3, "max": 1_000})
    max_interval_cv: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    max_mean_interval_seconds: int = field(default=900, metadata={"min": 1})


@dataclass(frozen=True)
class NewServiceSettings:
    enabled: bool = True
    severity: Severity = "low"
    warmup_days: int = field(default=14, metadata={"min": 0, "max": 365})


@dataclass(frozen=True)
class RepeatedDenialsSettings:
    enabled: bool = True
    severity: Severity = "high"
    # At least `min_denials` of a user's requests denied by the gateway guard within
    # `window_seconds`: someone trying to get around the policy.
    min_denials: int = field(default=5, metadata={"min": 2, "max": 1_000})
    window_seconds: int = field(default=600, metadata={"min": 1, "max": 86_400})


@dataclass(frozen=True)
class BudgetThresholdSettings:
    enabled: bool = True  # severities are the thresholds' own (budgets.thresholds)


@dataclass(frozen=True)
class BudgetForecastSettings:
    enabled: bool = True
    severity: Severity = "medium"
    # Raised when the projected overrun is at least this share of the budget: a forecast a few
    # percent over is within the run-rate's own noise, and the 100% threshold follows anyway.
    min_overrun_percent: int = field(default=5, metadata={"min": 0, "max": 1000})


@dataclass(frozen=True)
class Detectors:
    banned_provider: DetectorToggle = DetectorToggle(severity="critical")
    unsanctioned_service: DetectorToggle = DetectorToggle(severity="high")
    personal_account: DetectorToggle = DetectorToggle(severity="medium")
    pii_sent: PiiSettings = PiiSettings()
    off_hours: DetectorToggle = DetectorToggle(severity="low")
    volume_spike: VolumeSpikeSettings = VolumeSpikeSettings()
    peer_spike: PeerSpikeSettings = PeerSpikeSettings()
    automation_burst: AutomationBurstSettings = AutomationBurstSettings()
    non_work_content: DetectorToggle = DetectorToggle(severity="medium")
    new_service_in_department: NewServiceSettings = NewServiceSettings()
    repeated_denials: RepeatedDenialsSettings = RepeatedDenialsSettings()
    budget_threshold: BudgetThresholdSettings = BudgetThresholdSettings()
    budget_forecast: BudgetForecastSettings = BudgetForecastSettings()


# --- budgets, categories, routing ------------------------------------------------------------


@dataclass(frozen=True)
class BudgetThreshold:
    percent: int
    severity: Severity


def _threshold_severity(percent: int) -> Severity:
    return "high" if percent >= 100 else "medium" if percent >= 80 else "low"


@dataclass(frozen=True)
class BudgetAmounts:
    """What may be spent in an Asia/Seoul month and in a fiscal year (the calendar year, as
    in Korea); None: no budget for that period."""

    monthly_krw: Decimal | None = None
    yearly_krw: Decimal | None = None


@dataclass(frozen=True)
class BudgetPolicy:
    monthly_krw: Decimal | None = None  # the organisation's; None: no budget
    yearly_krw: Decimal | None = None
    departments: Mapping[str, BudgetAmounts] = field(default_factory=lambda: MappingProxyType({}))
    thresholds: tuple[BudgetThreshold, ...] = tuple(
        BudgetThreshold(p, _threshold_severity(p)) for p in (50, 80, 100)
    )
    lookback_days: int = 7  # the forecast's run-rate: metered spend per day over this many days


@dataclass(frozen=True)
class CategoryMatcher:
    """Content categories by exact name or by prefix ("personal.*")."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: list[str]) -> CategoryMatcher:
        exact = frozenset(p for p in patterns if not p.endswith(".*"))
        prefixes = tuple(sorted(p[:-1] for p in patterns if p.endswith(".*")))
        return cls(exact, prefixes)

    def matches(self, category: str) -> bool:
        return bool(category) and (category in self.exact or category.startswith(self.prefixes))

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(sorted(self.exact)) + tuple(p + "*" for p in self.prefixes)


@dataclass(frozen=True)
class WebhookTarget:
    """A Slack-compatible incoming webhook: a URL, or the environment variable holding one
    (webhook URLs are secrets; the environment keeps them out of the versioned file)."""

    url: str | None = None
    env: str | None = None

    def resolve(self, environ: Mapping[str, str]) -> str | None:
        return self.url if self.url is not None else environ.get(self.env or "") or None


@dataclass(frozen=True)
class AlertRouting:
    webhooks: Mapping[Severity, tuple[WebhookTarget, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    format: Literal["slack"] = "slack"

    def targets(self, severity: Severity) -> tuple[WebhookTarget, ...]:
        return self.webhooks.get(severity, ())


# --- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganizationPolicy:
    organization_id: str | None  # None: the defaults, which apply to organisations not listed
    working_time: WorkingTime
    banned_providers: frozenset[str] = ALWAYS_BANNED_PROVIDERS
    globally_banned_providers: frozenset[str] = ALWAYS_BANNED_PROVIDERS  # banned by the defaults
    sanctioned_services: frozenset[str] = frozenset({"chatgpt"})
    allowed_account_kinds: frozenset[str] = frozenset({"organizational"})
    non_work_categories: CategoryMatcher = CategoryMatcher()
    detectors: Detectors = Detectors()
    budget: BudgetPolicy = BudgetPolicy()
    routing: AlertRouting = AlertRouting()
    enforcement: Enforcement = field(default_factory=Enforcement)
    # The organisation's block as the file gives it, defaults merged in: what a gateway gets
    # to decide locally (core.decision), without the other organisations' policies.
    document: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    _allowed_kind_values: frozenset[int] = field(init=False, repr=False)

    def is_banned(self, provider: str, service: str) -> bool:
        return provider in self.banned_providers or service in self.banned_providers

    def is_sanctioned(self, service: str) -> bool:
        return service in self.sanctioned_services

    def allows_account_kind(self, kind: int) -> bool:
        return kind in self._allowed_kind_values

    def __post_init__(self) -> None:
        values = frozenset(ACCOUNT_KINDS[name] for name in self.allowed_account_kinds)
        object.__setattr__(self, "_allowed_kind_values", values)


@dataclass(frozen=True)
class PolicySet:
    version: str
    source: str
    defaults: OrganizationPolicy
    organizations: Mapping[str, OrganizationPolicy]

    def for_organization(self, organization_id: str) -> OrganizationPolicy:
        """The organisation's policy; the defaults for an organisation the file does not list."""
        return self.organizations.get(organization_id, self.defaults)


def load_policies(path: Path | str) -> PolicySet:
    """Load and validate a policy file; every error names the file, the entry and the reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    return parse_policies(parse_yaml(text, str(path), PolicySourceError), str(path))


def parse_policies(document: Any, source: str = "<policies>") -> PolicySet:
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: the policy file must be a mapping")
    _check_keys(document, {"version", "defaults", "organizations"}, source)
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        raise PolicyError(f'{source}: version: must be a non-empty quoted string, e.g. "2024-09"')
    raw_defaults = document.get("defaults", {})
    if not isinstance(raw_defaults, dict):
        raise PolicyError(f"{source}: defaults: must be a mapping")
    defaults_at = At(source, PolicySourceError, "defaults")
    enforcement_layers = [
        (raw_defaults.get("enforcement"), defaults_at.key(raw_defaults, "enforcement"))
    ]
    defaults = replace(
        _parse_organization(raw_defaults, None, f"{source}: defaults", ALWAYS_BANNED_PROVIDERS),
        enforcement=parse_enforcement(enforcement_layers),
        document=_plain(raw_defaults),
    )
    raw_orgs = document.get("organizations") or {}
    if not isinstance(raw_orgs, dict):
        raise PolicyError(
            f"{source}: organizations: must be a mapping of organisation id to policy"
        )
    organizations: dict[str, OrganizationPolicy] = {}
    for org_id, override in raw_orgs.items():
        where = f"{source}: organizations.{org_id}"
        if not isinstance(org_id, str) or not _ID.fullmatch(org_id):
            raise PolicyError(f"{where}: {org_id!r} is not a valid organisation id")
        if not isinstance(override, dict):
            raise PolicyError(f"{where}: must be a mapping")
        _check_keys(override, _ORGANIZATION_KEYS, where)
        merged = _merge(raw_defaults, override)
        if "banned_providers" in override:
            # Banning only adds: an organisation cannot lift what the defaults ban.
            merged["banned_providers"] = _as_list(
                raw_defaults.get("banned_providers"), f"{source}: defaults.banned_providers"
            ) + _as_list(override["banned_providers"], f"{where}.banned_providers")
        override_at = At(source, PolicySourceError, f"organizations.{org_id}")
        layers = [
            *enforcement_layers,
            (override.get("enforcement"), override_at.key(override, "enforcement")),
        ]
        organizations[org_id] = replace(
            _parse_organization(merged, org_id, where, defaults.banned_providers),
            enforcement=parse_enforcement(layers),
            document=_plain(merged),
        )
    return PolicySet(version, source, defaults, MappingProxyType(organizations))


_ORGANIZATION_KEYS = {
    "enforcement",
    "time_zone",
    "banned_providers",
    "sanctioned_services",
    "account_kinds",
    "working_hours",
    "schedules",
    "non_work_categories",
    "detectors",
    "budgets",
    "alerts",
}


def _plain(value: Any) -> Any:
    """A parsed YAML value as plain dicts and lists (frozen: policies are shared)."""
    if isinstance(value, dict):
        return MappingProxyType({key: _plain(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_plain(item) for item in value)
    return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def _parse_organization(
    raw: dict[str, Any], org_id: str | None, where: str, globally_banned: frozenset[str]
) -> OrganizationPolicy:
    _check_keys(raw, _ORGANIZATION_KEYS, where)
    zone_name = raw.get("time_zone", "Asia/Seoul")
    if not isinstance(zone_name, str):
        raise PolicyError(f"{where}.time_zone: must be an IANA time zone name")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"{where}.time_zone: {zone_name!r} is not an IANA time zone") from None
    banned = (
        frozenset(_names(raw.get("banned_providers", []), f"{where}.banned_providers", _NAME))
        | ALWAYS_BANNED_PROVIDERS
    )
    if org_id is None:
        globally_banned = banned
    sanctioned = _names(
        raw.get("sanctioned_services", ["chatgpt"]), f"{where}.sanctioned_services", _NAME
    )
    for index, service in enumerate(sanctioned):
        if service in banned:
            reason = (
                "banned for every government"
                if service in ALWAYS_BANNED_PROVIDERS
                else "banned by this policy"
            )
            raise PolicyError(
                f"{where}.sanctioned_services[{index}]: {service!r} is {reason} "
                "and cannot be sanctioned"
            )
    kinds = _names(raw.get("account_kinds", ["organizational"]), f"{where}.account_kinds", _NAME)
    for index, kind in enumerate(kinds):
        if kind not in ACCOUNT_KINDS:
            raise PolicyError(
                f"{where}.account_kinds[{index}]: {kind!r} is not one of {', '.join(ACCOUNT_KINDS)}"
            )
    categories = _names(
        raw.get("non_work_categories", []), f"{where}.non_work_categories", _CATEGORY_PATTERN
    )
    return OrganizationPolicy(
        organization_id=org_id,
        working_time=_parse_working_time(raw, zone, where),
        banned_providers=banned,
        globally_banned_providers=globally_banned,
        sanctioned_services=frozenset(sanctioned),
        allowed_account_kinds=frozenset(kinds),
        non_work_categories=CategoryMatcher.of(categories),
        detectors=_parse_detectors(raw.get("detectors", {}), f"{where}.detectors"),
        budget=_parse_budgets(raw.get("budgets", {}), f"{where}.budgets"),
        routing=_parse_alerts(raw.get("alerts", {}), f"{where}.alerts"),
    )


def _parse_working_time(raw: dict[str, Any], zone: ZoneInfo, where: str) -> WorkingTime:
    block = _mapping(raw.get("working_hours", {}), f"{where}.working_hours")
    at = f"{where}.working_hours"
    _check_keys(
        block,
        {
            "start",
            "end",
            "grace_minutes",
            "weekdays",
            "holidays",
            "holiday_subdivision",
            "extra_holidays",
        },
        at,
    )
    start = _clock(block.get("start", "09:00"), f"{at}.start", end=False)
    end = _clock(block.get("end", "18:00"), f"{at}.end", end=True)
    weekdays = _weekdays(block.get("weekdays", list(WEEKDAYS[:5])), f"{at}.weekdays")
    grace = _int(block.get("grace_minutes", 60), f"{at}.grace_minutes", 0, 720)
    country = block.get("holidays", "KR")
    subdivision = block.get("holiday_subdivision")
    if country is not None:
        if not isinstance(country, str) or country not in holidays.list_supported_countries():
            raise PolicyError(
                f"{at}.holidays: {country!r} is not a country code the holidays package knows "
                "(e.g. KR), or null for none"
            )
        if subdivision is not None:
            known = holidays.list_supported_countries()[country]
            if not isinstance(subdivision, str) or subdivision not in known:
                raise PolicyError(
                    f"{at}.holiday_subdivision: {subdivision!r} is not one of {known}"
                )
    elif subdivision is not None:
        raise PolicyError(f"{at}.holiday_subdivision: needs holidays (a country code)")
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
    raw_schedules = raw.get("schedules", [])
    if not isinstance(raw_schedules, list):
        raise PolicyError(f"{where}.schedules: must be a list")
    names: set[str] = set()
    for index, entry in enumerate(raw_schedules):
        schedule = _parse_schedule(entry, f"{where}.schedules[{index}]", weekdays)
        if schedule.name in names:
            raise PolicyError(f"{where}.schedules[{index}].name: {schedule.name!r} appears twice")
        names.add(schedule.name)
        schedules.append(schedule)
    return WorkingTime(
        time_zone=zone,
        office=office,
        holiday_country=country,
        holiday_subdivision=subdivision,
        extra_holidays=_extra_holidays(block.get("extra_holidays", {}), f"{at}.extra_holidays"),
        schedules=tuple(schedules),
    )


def _parse_schedule(entry: Any, where: str, office_weekdays: frozenset[int]) -> Schedule:
    block = _mapping(entry, where)
    _check_keys(
        block,
        {
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
        },
        where,
    )
    name = block.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PolicyError(f"{where}.name: must be a short lower-case name, e.g. it-remote-work")
    departments = _names(block.get("departments", []), f"{where}.departments", _ID)
    for index, user in enumerate(_as_list(block.get("users"), f"{where}.users")):
        if isinstance(user, str) and "@" in user:
            raise PolicyError(
                f"{where}.users[{index}]: must be a pseudonymised user id (keyed HMAC), "
                "not an e-mail"
            )
    users = _names(block.get("users", []), f"{where}.users", _ID)
    if not departments and not users:
        raise PolicyError(
            f"{where}: names no departments and no users (for everyone, change working_hours)"
        )
    start = _clock(block.get("start"), f"{where}.start", end=False)
    end = _clock(block.get("end"), f"{where}.end", end=True)
    valid_from = _date(block.get("valid_from"), f"{where}.valid_from", optional=True)
    valid_until = _date(block.get("valid_until"), f"{where}.valid_until", optional=True)
    if valid_from and valid_until and valid_until < valid_from:
        raise PolicyError(f"{where}.valid_until: is before valid_from")
    on_holidays = block.get("holidays", False)
    if not isinstance(on_holidays, bool):
        raise PolicyError(f"{where}.holidays: must be true or false (works on public holidays)")
    grace = _schedule_grace(block, where)
    return Schedule(
        name=name,
        start=start.at,
        end_second=end.seconds,
        weekdays=_weekdays(block["weekdays"], f"{where}.weekdays")
        if "weekdays" in block
        else office_weekdays,
        on_holidays=on_holidays,
        departments=frozenset(departments),
        users=frozenset(users),
        valid_from=valid_from,
        valid_until=valid_until,
        grace_seconds=grace * 60,
    )


def _schedule_grace(block: dict[str, Any], where: str) -> int:
    """A schedule's grace in minutes, 0 unless it gives one; an error names its line too."""
    value = block.get("grace_minutes", 0)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 720:
        return value
    source, _, path = where.partition(": ")
    At(source, PolicySourceError, path).key(block, "grace_minutes").fail(
        f"must be a whole number of minutes between 0 and 720, got {value!r}"
    )


def _parse_detectors(raw: Any, where: str) -> Detectors:
    block = _mapping(raw, where)
    _check_keys(block, {*DETECTOR_NAMES, *BUDGET_ALERT_TYPES}, where)
    base = Detectors()
    changes: dict[str, Any] = {}
    for name in (*DETECTOR_NAMES, *BUDGET_ALERT_TYPES):
        if name in block:
            changes[name] = _parse_settings(getattr(base, name), block[name], f"{where}.{name}")
    detectors = replace(base, **changes)
    if not detectors.banned_provider.enabled:
        raise PolicyError(
            f"{where}.banned_provider.enabled: banned providers are always detected "
            "(DeepSeek is banned for every government)"
        )
    return detectors


_SettingsT = typing.TypeVar("_SettingsT")


def _parse_settings(base: _SettingsT, raw: Any, where: str) -> _SettingsT:
    """A detector's settings: `base` with the values the block gives, each checked by type."""
    block = _mapping(raw, where)
    spec = {f.name: f for f in fields(base)}  # type: ignore[arg-type]
    _check_keys(block, set(spec), where)
    hints = typing.get_type_hints(type(base))
    changes: dict[str, Any] = {}
    for key, value in block.items():
        at = f"{where}.{key}"
        hint = hints[key]
        bounds = spec[key].metadata
        if key == "types":
            changes[key] = _pii_types(value, at)
        elif hint is bool:
            if not isinstance(value, bool):
                raise PolicyError(f"{at}: must be true or false")
            changes[key] = value
        elif hint is int:
            changes[key] = _int(value, at, bounds.get("min", 0), bounds.get("max", 10**9))
        elif hint is float:
            changes[key] = _float(value, at, bounds.get("min", 0.0), bounds.get("max", 1e9))
        elif hint is Decimal:
            changes[key] = _money(value, at)
        else:  # the severity
            changes[key] = _severity(value, at)
    return replace(base, **changes)  # type: ignore[type-var]


def _pii_types(raw: Any, where: str) -> Mapping[str, Severity | None]:
    block = _mapping(raw, where)
    merged: dict[str, Severity | None] = dict(PiiSettings().types)
    for kind, value in block.items():
        if not isinstance(kind, str) or not _NAME.fullmatch(kind):
            raise PolicyError(f"{where}: {kind!r} is not a finding type (e.g. kr_rrn)")
        merged[kind] = None if value == "ignore" else _severity(value, f"{where}.{kind}", "ignore")
    return MappingProxyType(merged)


def _parse_budgets(raw: Any, where: str) -> BudgetPolicy:
    block = _mapping(raw, where)
    _check_keys(
        block, {"monthly_krw", "yearly_krw", "departments", "thresholds", "forecast"}, where
    )
    organization = _budget_amounts(block, where)
    departments = _mapping(block.get("departments") or {}, f"{where}.departments")
    budgets: dict[str, BudgetAmounts] = {}
    for department, entry in departments.items():
        at = f"{where}.departments.{department}"
        if not isinstance(department, str) or not _ID.fullmatch(department):
            raise PolicyError(f"{where}.departments: {department!r} is not a department id")
        if isinstance(entry, dict):
            _check_keys(entry, {"monthly_krw", "yearly_krw"}, at)
            amounts = _budget_amounts(entry, at)
        elif entry is None:  # lifts a budget the defaults set
            amounts = BudgetAmounts()
        else:  # the short form: a monthly budget
            amounts = BudgetAmounts(monthly_krw=_money(entry, at, positive=True))
        if amounts != BudgetAmounts():
            budgets[department] = amounts
    raw_thresholds = block.get("thresholds", [50, 80, 100])
    thresholds: list[BudgetThreshold] = []
    if isinstance(raw_thresholds, dict):
        for percent, severity in raw_thresholds.items():
            at = f"{where}.thresholds.{percent}"
            thresholds.append(BudgetThreshold(_int(percent, at, 1, 1000), _severity(severity, at)))
    elif isinstance(raw_thresholds, list):
        for index, percent in enumerate(raw_thresholds):
            value = _int(percent, f"{where}.thresholds[{index}]", 1, 1000)
            thresholds.append(BudgetThreshold(value, _threshold_severity(value)))
    else:
        raise PolicyError(
            f"{where}.thresholds: must be a list of percentages, e.g. [50, 80, 100], "
            "or a mapping of percentage to severity, e.g. {50: low, 80: medium, 100: high}"
        )
    percents = [t.percent for t in thresholds]
    if len(set(percents)) != len(percents):
        raise PolicyError(f"{where}.thresholds: a percentage appears twice")
    forecast = _mapping(block.get("forecast"), f"{where}.forecast")
    _check_keys(forecast, {"lookback_days"}, f"{where}.forecast")
    return BudgetPolicy(
        monthly_krw=organization.monthly_krw,
        yearly_krw=organization.yearly_krw,
        departments=MappingProxyType(budgets),
        thresholds=tuple(sorted(thresholds, key=lambda t: t.percent)),
        lookback_days=_int(
            forecast.get("lookback_days", 7), f"{where}.forecast.lookback_days", 1, 90
        ),
    )


def _budget_amounts(block: dict[str, Any], where: str) -> BudgetAmounts:
    """monthly_krw and yearly_krw of `block`; null (or absent) means no budget."""
    monthly, yearly = (
        None if block.get(key) is None else _money(block[key], f"{where}.{key}", positive=True)
        for key in ("monthly_krw", "yearly_krw")
    )
    if monthly is not None and yearly is not None and yearly < monthly:
        raise PolicyError(
            f"{where}.yearly_krw: {yearly} is less than monthly_krw {monthly} "
            "(the year's budget covers twelve months)"
        )
    return BudgetAmounts(monthly, yearly)


def _parse_alerts(raw: Any, where: str) -> AlertRouting:
    block = _mapping(raw, where)
    _check_keys(block, {"webhooks", "format"}, where)
    if block.get("format", "slack") != "slack":
        raise PolicyError(f"{where}.format: only slack (incoming-webhook JSON) is supported")
    hooks = _mapping(block.get("webhooks") or {}, f"{where}.webhooks")
    routes: dict[Severity, tuple[WebhookTarget, ...]] = {}
    for severity, targets in hooks.items():
        at = f"{where}.webhooks.{severity}"
        level = _severity(severity, at)
        if not isinstance(targets, list):
            raise PolicyError(f"{at}: must be a list of URLs or {{env: VARIABLE}} entries")
        routes[level] = tuple(_webhook(t, f"{at}[{i}]") for i, t in enumerate(targets))
    return AlertRouting(MappingProxyType(routes))


def _webhook(raw: Any, where: str) -> WebhookTarget:
    if isinstance(raw, dict):
        _check_keys(raw, {"env"}, where)
        name = raw.get("env")
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise PolicyError(f"{where}.env: must be an environment variable name")
        return WebhookTarget(env=name)
    if not isinstance(raw, str):
        raise PolicyError(f"{where}: must be a URL or {{env: VARIABLE}}")
    parts = urlsplit(raw)
    if not parts.netloc or parts.scheme not in ("https", "http"):
        raise PolicyError(f"{where}: {raw[:60]!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise PolicyError(f"{where}: must be https (alerts name users and departments)")
    return WebhookTarget(url=raw)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    at: time
    seconds: int


def _clock(value: Any, where: str, *, end: bool) -> _Clock:
    if isinstance(value, int) and not isinstance(value, bool):
        raise PolicyError(
            f'{where}: must be a quoted "HH:MM" string (YAML reads unquoted 18:00 as a number)'
        )
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise PolicyError(f'{where}: must be a time "HH:MM" (00:00 to 24:00), got {value!r}')
    hour, minute = int(value[:2]), int(value[3:])
    if hour == 24 and (minute or not end):
        raise PolicyError(f"{where}: 24:00 is only valid as an end time")
    seconds = hour * 3600 + minute * 60
    if end and seconds == 0:
        seconds = _DAY_SECONDS  # an end at 00:00 is midnight at the end of the day
    return _Clock(time(hour % 24, minute), seconds)


def _weekdays(value: Any, where: str) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{where}: must be a non-empty list of {', '.join(WEEKDAYS)}")
    days: set[int] = set()
    for index, day in enumerate(value):
        if day not in WEEKDAYS:
            raise PolicyError(f"{where}[{index}]: {day!r} is not one of {', '.join(WEEKDAYS)}")
        days.add(WEEKDAYS.index(day))
    return frozenset(days)


def _date(value: Any, where: str, *, optional: bool = False) -> date | None:
    if value is None and optional:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PolicyError(f"{where}: must be a date YYYY-MM-DD, got {value!r}")


def _extra_holidays(value: Any, where: str) -> Mapping[date, str]:
    days: dict[date, str] = {}
    if isinstance(value, list):
        for index, item in enumerate(value):
            day = _date(item, f"{where}[{index}]")
            assert day is not None
            days[day] = "organisation holiday"
    elif isinstance(value, dict):
        for item, name in value.items():
            day = _date(item, f"{where}.{item}")
            assert day is not None
            if not isinstance(name, str) or not name.strip():
                raise PolicyError(f"{where}.{item}: the holiday's name must be a string")
            days[day] = name
    elif value is not None:
        raise PolicyError(f"{where}: must be a list of dates or a mapping of date to name")
    return MappingProxyType(days)


def _severity(value: Any, where: str, *also: str) -> Severity:
    if value not in SEVERITIES:
        allowed = ", ".join((*SEVERITIES, *also))
        raise PolicyError(f"{where}: {value!r} is not one of {allowed}")
    return typing.cast(Severity, value)


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{where}: must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise PolicyError(f"{where}: must be between {low} and {high}, got {value}")
    return value


def _float(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PolicyError(f"{where}: must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise PolicyError(f"{where}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise PolicyError(f"{where}: must be between {low:g} and {high:g}, got {number:g}")
    return number


def _money(value: Any, where: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        # A YAML float would already have lost precision: amounts are quoted decimal strings.
        raise PolicyError(f'{where}: must be a whole number or a quoted decimal, e.g. "5000000"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise PolicyError(f"{where}: {value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0 or (positive and amount == 0):
        raise PolicyError(f"{where}: must be a {'positive' if positive else 'non-negative'} amount")
    return amount


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be a mapping")
    return value


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{where}: must be a list")
    return value


def _names(value: Any, where: str, pattern: re.Pattern[str]) -> list[str]:
    items = _as_list(value, where)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise PolicyError(f"{where}[{index}]: {item!r} is not a valid name")
    return items


def _check_keys(block: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(block) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(map(str, unknown))}")
