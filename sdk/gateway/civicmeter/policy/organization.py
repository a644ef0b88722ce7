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
whatever the organisation's time_zone. The file is read by the line-aware loader (yaml_source)
and loading validates everything: an error names the file, the line, the entry and the reason,
and a key given twice in one mapping is an error. Each block's model and reader is its own
module: working_time, detectors, budgets, alert_routing, enforcement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.alert_routing import AlertRouting, parse_alerts
from civicmeter.policy.budgets import BudgetPolicy, parse_budgets
from civicmeter.policy.detectors import Detectors, parse_detectors
from civicmeter.policy.document import (
    ID,
    NAME,
    PolicyError,
    PolicySourceError,
    as_list,
    check_keys,
    names,
    root,
)
from civicmeter.policy.enforcement import Enforcement, parse_enforcement
from civicmeter.policy.working_time import WorkingTime, parse_working_time
from civicmeter.policy.yaml_source import At, LocatedMap, parse_yaml

__all__ = [
    "ACCOUNT_KINDS",
    "ALWAYS_BANNED_PROVIDERS",
    "CategoryMatcher",
    "OrganizationPolicy",
    "PolicyError",
    "PolicySet",
    "PolicySourceError",
    "load_policies",
    "parse_policies",
]

# Banned for every government (central and local government blocked it); no policy unbans it.
ALWAYS_BANNED_PROVIDERS = frozenset({"deepseek"})
ACCOUNT_KINDS = {
    "organizational": pb.ACCOUNT_KIND_ORGANIZATIONAL,
    "personal": pb.ACCOUNT_KIND_PERSONAL,
}
_CATEGORY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}(\.\*)?")
_ORGANIZATION_KEYS = (
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
)


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
    # to decide locally (policy.decision), without the other organisations' policies.
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
    """Load and validate a policy file; every error names the file, the line, the entry and
    the reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicySourceError(
            str(path), None, "", f"cannot read the policy file: {exc}"
        ) from None
    return parse_policies(parse_yaml(text, str(path), PolicySourceError), str(path))


def parse_policies(document: Any, source: str = "<policies>") -> PolicySet:
    """The policies of a parsed document: with lines if parse_yaml read it, without if built
    in code."""
    at = root(source)
    if not isinstance(document, dict):
        at.fail("the policy file must be a mapping")
    check_keys(at, document, ("version", "defaults", "organizations"))
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        at.key(document, "version").fail('must be a non-empty quoted string, e.g. "2024-09"')
    defaults_at = at.key(document, "defaults")
    raw_defaults = document.get("defaults", {})
    if not isinstance(raw_defaults, dict):
        defaults_at.fail("must be a mapping")
    enforcement_layers = [
        (raw_defaults.get("enforcement"), defaults_at.key(raw_defaults, "enforcement"))
    ]
    defaults = replace(
        _parse_organization(defaults_at, raw_defaults, None, ALWAYS_BANNED_PROVIDERS),
        enforcement=parse_enforcement(enforcement_layers),
        document=_plain(raw_defaults),
    )
    organizations_at = at.key(document, "organizations")
    raw_orgs = document.get("organizations") or {}
    if not isinstance(raw_orgs, dict):
        organizations_at.fail("must be a mapping of organisation id to policy")
    organizations: dict[str, OrganizationPolicy] = {}
    for org_id, override in raw_orgs.items():
        override_at = organizations_at.key(raw_orgs, org_id)
        if not isinstance(org_id, str) or not ID.fullmatch(org_id):
            organizations_at.label(raw_orgs, org_id).fail(
                f"{org_id!r} is not a valid organisation id"
            )
        if not isinstance(override, dict):
            override_at.fail("must be a mapping")
        check_keys(override_at, override, _ORGANIZATION_KEYS)
        merged = _merge(raw_defaults, override)
        if "banned_providers" in override:
            # Banning only adds: an organisation cannot lift what the defaults ban.
            merged["banned_providers"] = as_list(
                defaults_at.key(raw_defaults, "banned_providers"),
                raw_defaults.get("banned_providers"),
            ) + as_list(override_at.key(override, "banned_providers"), override["banned_providers"])
        layers = [
            *enforcement_layers,
            (override.get("enforcement"), override_at.key(override, "enforcement")),
        ]
        organizations[org_id] = replace(
            _parse_organization(override_at, merged, org_id, defaults.banned_providers),
            enforcement=parse_enforcement(layers),
            document=_plain(merged),
        )
    return PolicySet(version, source, defaults, MappingProxyType(organizations))


def _plain(value: Any) -> Any:
    """A parsed YAML value as plain dicts and lists (frozen: policies are shared)."""
    if isinstance(value, dict):
        return MappingProxyType({key: _plain(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_plain(item) for item in value)
    return value


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys over it, mappings merged key by key. The lines are the
    override's where it gives the value, the base's where it does not."""
    merged = LocatedMap(override.line if isinstance(override, LocatedMap) else None)
    for source in (base, override):
        if isinstance(source, LocatedMap):
            merged.key_lines.update(source.key_lines)
            merged.value_lines.update(source.value_lines)
    merged.update(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def _parse_organization(
    at: At, raw: Mapping[str, Any], org_id: str | None, globally_banned: frozenset[str]
) -> OrganizationPolicy:
    check_keys(at, raw, _ORGANIZATION_KEYS)
    zone_at = at.key(raw, "time_zone")
    zone_name = raw.get("time_zone", "Asia/Seoul")
    if not isinstance(zone_name, str):
        zone_at.fail("must be an IANA time zone name")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone_at.fail(f"{zone_name!r} is not an IANA time zone")
    banned = (
        frozenset(names(at.key(raw, "banned_providers"), raw.get("banned_providers", []), NAME))
        | ALWAYS_BANNED_PROVIDERS
    )
    if org_id is None:
        globally_banned = banned
    sanctioned_at = at.key(raw, "sanctioned_services")
    sanctioned = names(sanctioned_at, raw.get("sanctioned_services", ["chatgpt"]), NAME)
    for index, service in enumerate(sanctioned):
        if service in banned:
            reason = (
                "banned for every government"
                if service in ALWAYS_BANNED_PROVIDERS
                else "banned by this policy"
            )
            sanctioned_at.item(raw.get("sanctioned_services"), index).fail(
                f"{service!r} is {reason} and cannot be sanctioned"
            )
    kinds_at = at.key(raw, "account_kinds")
    kinds = names(kinds_at, raw.get("account_kinds", ["organizational"]), NAME)
    for index, kind in enumerate(kinds):
        if kind not in ACCOUNT_KINDS:
            kinds_at.item(raw.get("account_kinds"), index).fail(
                f"{kind!r} is not one of {', '.join(ACCOUNT_KINDS)}"
            )
    categories = names(
        at.key(raw, "non_work_categories"), raw.get("non_work_categories", []), _CATEGORY_PATTERN
    )
    return OrganizationPolicy(
        organization_id=org_id,
        working_time=parse_working_time(raw, zone, at),
        banned_providers=banned,
        globally_banned_providers=globally_banned,
        sanctioned_services=frozenset(sanctioned),
        allowed_account_kinds=frozenset(kinds),
        non_work_categories=CategoryMatcher.of(categories),
        detectors=parse_detectors(at.key(raw, "detectors"), raw.get("detectors", {})),
        budget=parse_budgets(at.key(raw, "budgets"), raw.get("budgets", {})),
        routing=parse_alerts(at.key(raw, "alerts"), raw.get("alerts", {})),
    )
