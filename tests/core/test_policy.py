import dataclasses
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.budgets import BudgetAmounts
from civicmeter.policy.detectors import BUDGET_ALERT_TYPES, DETECTOR_NAMES
from civicmeter.policy.organization import (
    ALWAYS_BANNED_PROVIDERS,
    PolicyError,
    PolicySet,
    load_policies,
    parse_policies,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "policies.yaml"
KST = ZoneInfo("Asia/Seoul")
GOVERNMENTS = [
    g["id"]
    for g in yaml.safe_load(
        (REPO.parent / "shared" / "data" / "kr_local_gov_genai_2024.yaml").read_text()
    )["governments"]
]
NIGHT_USER = "u_0123456789abcdef0123456789abcdef"


def kst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=KST)


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policies(SHIPPED)


def doc(**defaults: Any) -> dict[str, Any]:
    return {"version": "test-1", "defaults": defaults, "organizations": {}}


# --- the shipped file -----------------------------------------------------------------------


def test_the_shipped_policy_covers_the_17_governments(shipped: PolicySet) -> None:
    assert shipped.version == "2024-09"
    assert sorted(shipped.organizations) == sorted(GOVERNMENTS)
    seoul = shipped.for_organization("seoul")
    assert seoul.organization_id == "seoul"
    assert len(seoul.sanctioned_services) == 10
    assert shipped.for_organization("gwangju").sanctioned_services == {
        "chatgpt",
        "openai-api",
        "claude-api",
    }
    assert seoul.budget.monthly_krw == Decimal("5000000")
    assert seoul.budget.yearly_krw == Decimal("60000000")
    assert seoul.budget.departments["digital-policy"] == BudgetAmounts(
        Decimal("1500000"), Decimal("18000000")
    )
    assert seoul.budget.departments["press-office"] == BudgetAmounts(Decimal("400000"))
    assert [(t.percent, t.severity) for t in seoul.budget.thresholds] == [
        (50, "low"),
        (80, "medium"),
        (100, "high"),
    ]


def test_unknown_organisations_get_the_defaults(shipped: PolicySet) -> None:
    policy = shipped.for_organization("ministry-of-interior")
    assert policy is shipped.defaults
    assert policy.organization_id is None
    assert policy.working_time.time_zone == KST


def test_deepseek_is_banned_for_every_government(shipped: PolicySet) -> None:
    for org in [*GOVERNMENTS, "anyone-else"]:
        policy = shipped.for_organization(org)
        assert policy.is_banned("deepseek", "deepseek")
        assert policy.is_banned("deepseek", "deepseek-chat")
        assert not policy.is_banned("openai", "chatgpt")
        assert policy.detectors.banned_provider.enabled
    assert "deepseek" in ALWAYS_BANNED_PROVIDERS


def test_deepseek_stays_banned_whatever_the_file_says() -> None:
    document = doc(banned_providers=[])
    document["organizations"] = {"seoul": {"banned_providers": []}}
    policies = parse_policies(document, "p.yaml")
    assert policies.defaults.is_banned("deepseek", "x")
    assert policies.for_organization("seoul").is_banned("deepseek", "x")


def test_an_organisation_can_ban_more_but_not_lift_a_default_ban() -> None:
    document = doc(banned_providers=["char-ai"])
    document["organizations"] = {"busan": {"banned_providers": ["perplexity"]}}
    busan = parse_policies(document, "p.yaml").for_organization("busan")
    assert busan.banned_providers == {"deepseek", "char-ai", "perplexity"}
    assert busan.globally_banned_providers == {"deepseek", "char-ai"}


# --- validation errors name the file, the entry and the reason -----------------------------------


@pytest.mark.parametrize(
    ("defaults", "where", "reason"),
    [
        (
            {"sanctioned_services": ["chatgpt", "deepseek"]},
            "defaults.sanctioned_services[1]",
            "banned for every government",
        ),
        ({"working_hours": {"start": 540}}, "defaults.working_hours.start", 'quoted "HH:MM"'),
        ({"working_hours": {"end": "25:00"}}, "defaults.working_hours.end", "HH:MM"),
        (
            {"working_hours": {"weekdays": ["mon", "funday"]}},
            "defaults.working_hours.weekdays[1]",
            "'funday'",
        ),
        ({"working_hours": {"holidays": "XX"}}, "defaults.working_hours.holidays", "country code"),
        (
            {"working_hours": {"grace_minutes": -5}},
            "defaults.working_hours.grace_minutes",
            "between 0 and 720",
        ),
        (
            {
                "schedules": [
                    {
                        "name": "late",
                        "departments": ["it"],
                        "start": "07:00",
                        "end": "22:00",
                        "grace_minutes": "30m",
                    }
                ]
            },
            "defaults.schedules[0].grace_minutes",
            "whole number",
        ),
        (
            {
                "schedules": [
                    {
                        "name": "late",
                        "departments": ["it"],
                        "start": "07:00",
                        "end": "22:00",
                        "grace_minutes": 721,
                    }
                ]
            },
            "defaults.schedules[0].grace_minutes",
            "between 0 and 720",
        ),
        ({"time_zone": "Asia/Nowhere"}, "defaults.time_zone", "IANA"),
        ({"account_kinds": ["organizational", "shared"]}, "defaults.account_kinds[1]", "'shared'"),
        (
            {"non_work_categories": ["Gaming!"]},
            "defaults.non_work_categories[0]",
            "not a valid name",
        ),
        (
            {"schedules": [{"name": "x", "start": "07:00", "end": "22:00"}]},
            "defaults.schedules[0]",
            "no departments and no users",
        ),
        (
            {
                "schedules": [
                    {"name": "x", "users": ["kim@seoul.go.kr"], "start": "07:00", "end": "22:00"}
                ]
            },
            "defaults.schedules[0].users[0]",
            "pseudonymised",
        ),
        (
            {
                "schedules": [
                    {
                        "name": "x",
                        "departments": ["it"],
                        "start": "07:00",
                        "end": "22:00",
                        "valid_from": "2024-12-01",
                        "valid_until": "2024-11-01",
                    }
                ]
            },
            "defaults.schedules[0].valid_until",
            "before valid_from",
        ),
        (
            {"detectors": {"volume_spike": {"factor": 0.5}}},
            "defaults.detectors.volume_spike.factor",
            "between 1",
        ),
        (
            {"detectors": {"volume_spike": {"warmup_days": "five"}}},
            "defaults.detectors.volume_spike.warmup_days",
            "whole number",
        ),
        (
            {"detectors": {"peer_spike": {"severity": "urgent"}}},
            "defaults.detectors.peer_spike.severity",
            "'urgent'",
        ),
        (
            {"detectors": {"banned_provider": {"enabled": False}}},
            "defaults.detectors.banned_provider.enabled",
            "always detected",
        ),
        ({"detectors": {"spam": {}}}, "defaults.detectors", "unknown keys ['spam']"),
        (
            {"detectors": {"pii_sent": {"types": {"kr_rrn": "extreme"}}}},
            "defaults.detectors.pii_sent.types.kr_rrn",
            "ignore",
        ),
        ({"budgets": {"monthly_krw": 5000000.5}}, "defaults.budgets.monthly_krw", "quoted decimal"),
        ({"budgets": {"departments": {"it": "0"}}}, "defaults.budgets.departments.it", "positive"),
        ({"budgets": {"thresholds": [50, 50]}}, "defaults.budgets.thresholds", "twice"),
        ({"budgets": {"thresholds": {80: "loud"}}}, "defaults.budgets.thresholds.80", "'loud'"),
        ({"budgets": {"thresholds": "50%"}}, "defaults.budgets.thresholds", "mapping"),
        ({"budgets": {"yearly_krw": "-1"}}, "defaults.budgets.yearly_krw", "positive"),
        (
            {"budgets": {"monthly_krw": "5000000", "yearly_krw": "500000"}},
            "defaults.budgets.yearly_krw",
            "less than monthly_krw",
        ),
        (
            {"budgets": {"departments": {"it": {"monthly_krw": "9", "weekly_krw": "1"}}}},
            "defaults.budgets.departments.it",
            "unknown keys ['weekly_krw']",
        ),
        (
            {"budgets": {"departments": {"it": {"yearly_krw": 1.5}}}},
            "defaults.budgets.departments.it.yearly_krw",
            "quoted decimal",
        ),
        (
            {"budgets": {"forecast": {"lookback_days": 0}}},
            "defaults.budgets.forecast.lookback_days",
            "between 1 and 90",
        ),
        ({"budgets": {"forecast": {"method": "x"}}}, "defaults.budgets.forecast", "['method']"),
        (
            {"detectors": {"budget_forecast": {"min_overrun_percent": -5}}},
            "defaults.detectors.budget_forecast.min_overrun_percent",
            "between 0 and 1000",
        ),
        (
            {"detectors": {"budget_threshold": {"severity": "high"}}},
            "defaults.detectors.budget_threshold",
            "unknown keys ['severity']",
        ),
        (
            {"alerts": {"webhooks": {"high": ["http://hooks.example.com/x"]}}},
            "defaults.alerts.webhooks.high[0]",
            "https",
        ),
        (
            {"alerts": {"webhooks": {"high": [{"env": "lower-case"}]}}},
            "defaults.alerts.webhooks.high[0].env",
            "environment variable",
        ),
        ({"alerts": {"webhooks": {"loud": []}}}, "defaults.alerts.webhooks.loud", "'loud'"),
        ({"colour": "blue"}, "defaults", "unknown keys ['colour']"),
    ],
)
def test_errors_name_the_file_the_entry_and_the_reason(
    defaults: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policies(doc(**defaults), "config/policies.yaml")
    message = str(info.value)
    assert message.startswith(f"config/policies.yaml: {where}")
    assert reason in message


def test_errors_in_an_override_name_the_organisation() -> None:
    document = doc()
    document["organizations"] = {"jeju": {"working_hours": {"end": "18:00", "start": 900}}}
    with pytest.raises(PolicyError, match=r"^p\.yaml: organizations\.jeju\.working_hours\.start"):
        parse_policies(document, "p.yaml")
    document["organizations"] = {"jeju": {"sanctioned_services": ["claude"], "extra": 1}}
    with pytest.raises(PolicyError, match=r"organizations\.jeju: unknown keys \['extra'\]"):
        parse_policies(document, "p.yaml")


def test_the_version_is_required() -> None:
    with pytest.raises(PolicyError, match=r"p\.yaml: version: must be a non-empty quoted string"):
        parse_policies({"defaults": {}}, "p.yaml")


def test_a_file_is_read_and_errors_start_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    # Unquoted, YAML 1.1 reads 18:00 as the number 1080 (09:00 stays a string).
    path.write_text('version: "1"\ndefaults:\n  working_hours: {start: 09:00, end: 18:00}\n')
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    assert str(info.value).startswith(f"{path}:3: defaults.working_hours.end: must be a quoted")
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policies(tmp_path / "missing.yaml")


# --- defaults and overrides -------------------------------------------------------------------


def test_overrides_merge_mappings_key_by_key_and_replace_lists() -> None:
    document = doc(
        sanctioned_services=["chatgpt", "claude"],
        detectors={"volume_spike": {"factor": 4, "min_requests": 30}},
        working_hours={"start": "08:30", "end": "17:30"},
    )
    document["organizations"] = {
        "busan": {
            "sanctioned_services": ["perplexity"],
            "detectors": {"volume_spike": {"factor": 8}},
            "working_hours": {"grace_minutes": 15},
        }
    }
    policies = parse_policies(document, "p.yaml")
    busan = policies.for_organization("busan")
    assert busan.sanctioned_services == {"perplexity"}
    assert busan.detectors.volume_spike.factor == 8.0
    assert busan.detectors.volume_spike.min_requests == 30  # from the defaults
    assert busan.detectors.volume_spike.warmup_days == 7  # built in
    assert busan.working_time.office.start_second == 8 * 3600 + 1800
    assert busan.working_time.grace.total_seconds() == 15 * 60
    assert policies.defaults.detectors.volume_spike.factor == 4.0


def test_budgets_merge_per_department_and_a_null_lifts_a_default() -> None:
    document = doc(
        budgets={
            "monthly_krw": "1000000",
            "departments": {"welfare": "300000", "safety": {"yearly_krw": "2400000"}},
            "thresholds": {50: "low", 90: "high"},
        }
    )
    document["organizations"] = {
        "jeju": {
            "budgets": {
                "yearly_krw": "12000000",
                "departments": {"welfare": None, "it": {"monthly_krw": "200000"}},
                "forecast": {"lookback_days": 14},
            }
        }
    }
    policies = parse_policies(document, "p.yaml")
    jeju = policies.for_organization("jeju").budget
    assert (jeju.monthly_krw, jeju.yearly_krw) == (Decimal("1000000"), Decimal("12000000"))
    assert dict(jeju.departments) == {
        "safety": BudgetAmounts(yearly_krw=Decimal("2400000")),
        "it": BudgetAmounts(monthly_krw=Decimal("200000")),
    }
    assert [(t.percent, t.severity) for t in jeju.thresholds] == [(50, "low"), (90, "high")]
    assert jeju.lookback_days == 14
    defaults = policies.defaults.budget
    assert (defaults.yearly_krw, defaults.lookback_days) == (None, 7)
    assert defaults.departments["welfare"] == BudgetAmounts(monthly_krw=Decimal("300000"))
    assert (
        parse_policies(doc(budgets={"thresholds": []}), "p.yaml").defaults.budget.thresholds == ()
    )


def test_every_detector_has_settings_with_enabled_and_defaults() -> None:
    detectors = parse_policies(doc(), "p.yaml").defaults.detectors
    for name in (*DETECTOR_NAMES, *BUDGET_ALERT_TYPES):
        assert getattr(detectors, name).enabled
    assert detectors.banned_provider.severity == "critical"
    assert detectors.budget_forecast.severity == "medium"
    assert detectors.new_service_in_department.severity == "low"
    pii = detectors.pii_sent
    assert pii.severity_of("kr_rrn") == "high"
    assert pii.severity_of("kr_passport") == "high"
    assert pii.severity_of("phone") == "medium"
    assert pii.severity_of("kr_brn") is None  # ignored
    assert pii.severity_of("something_new") == "medium"


def test_pii_severities_and_toggles_override_per_organisation() -> None:
    document = doc(detectors={"pii_sent": {"types": {"email": "low"}}})
    document["organizations"] = {
        "sejong": {
            "detectors": {
                "pii_sent": {"types": {"phone": "ignore"}},
                "off_hours": {"enabled": False},
            }
        }
    }
    sejong = parse_policies(document, "p.yaml").for_organization("sejong")
    assert sejong.detectors.pii_sent.severity_of("phone") is None
    assert sejong.detectors.pii_sent.severity_of("email") == "low"
    assert sejong.detectors.pii_sent.severity_of("kr_rrn") == "high"
    assert not sejong.detectors.off_hours.enabled


def test_policies_are_frozen(shipped: PolicySet) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        shipped.defaults.sanctioned_services = frozenset()  # type: ignore[misc]
    with pytest.raises(TypeError):
        shipped.organizations["seoul"] = shipped.defaults  # type: ignore[index]


def test_account_kinds_and_categories(shipped: PolicySet) -> None:
    policy = shipped.for_organization("daegu")
    assert policy.allows_account_kind(pb.ACCOUNT_KIND_ORGANIZATIONAL)
    assert not policy.allows_account_kind(pb.ACCOUNT_KIND_PERSONAL)
    categories = policy.non_work_categories
    for category in ("entertainment", "gaming", "dating", "shopping", "personal.travel"):
        assert categories.matches(category)
    for category in ("", "work.drafting", "personality", "personal"):
        assert not categories.matches(category)


def test_webhooks_route_by_severity_and_come_from_the_environment() -> None:
    document = doc(
        alerts={
            "webhooks": {
                "critical": [{"env": "HOOK_SECURITY"}, "https://hooks.slack.com/services/T/B/x"],
                "low": ["http://127.0.0.1:9000/hook"],
            }
        }
    )
    routing = parse_policies(document, "p.yaml").defaults.routing
    critical = routing.targets("critical")
    assert [t.resolve({"HOOK_SECURITY": "https://example.org/h"}) for t in critical] == [
        "https://example.org/h",
        "https://hooks.slack.com/services/T/B/x",
    ]
    assert critical[0].resolve({}) is None
    assert routing.targets("medium") == ()


# --- working time: holidays, grace, schedules ---------------------------------------------------


def test_korean_public_holidays_including_lunar_and_substitute_days(shipped: PolicySet) -> None:
    working = shipped.for_organization("busan").working_time
    assert working.holiday(date(2024, 9, 17)) == "Chuseok"
    assert working.holiday(date(2024, 9, 17), "ko") == "추석"
    assert working.holiday(date(2024, 9, 16)) is not None  # the day before Chuseok
    assert working.holiday(date(2024, 2, 10)) == "Korean New Year"  # Seollal
    assert working.holiday(date(2024, 2, 12)) is not None  # substitute for Seollal on a Sunday
    assert working.holiday(date(2024, 10, 1)) == "Armed Forces Day"  # 2024's one-off holiday
    assert working.holiday(date(2024, 9, 19)) is None
    off = working.off_hours(kst("2024-09-17T10:15"), "welfare", "u_1")
    assert off is not None and off.reason == "holiday" and off.holiday == "Chuseok"
    assert off.holiday_ko == "추석"


def test_an_organisation_can_add_its_own_holidays(shipped: PolicySet) -> None:
    jeju = shipped.for_organization("jeju").working_time
    assert jeju.holiday(date(2024, 4, 3)) == "Jeju 4·3 Memorial Day (local holiday)"
    assert shipped.for_organization("busan").working_time.holiday(date(2024, 4, 3)) is None
    off = jeju.off_hours(kst("2024-04-03T11:00"), "welfare", "u_1")
    assert off is not None and off.reason == "holiday"


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        ("2024-09-19T10:00", None),
        ("2024-09-19T08:05", None),  # within the hour of grace
        ("2024-09-19T18:59", None),
        ("2024-09-19T07:55", "after_hours"),
        ("2024-09-19T19:00", "after_hours"),
        ("2024-09-20T23:30", "after_hours"),
        ("2024-09-21T12:00", "weekend"),
        ("2024-09-21T00:30", "weekend"),
        ("2024-09-18T12:00", "holiday"),
    ],
)
def test_office_hours_with_grace_weekends_and_holidays(
    shipped: PolicySet, moment: str, reason: str | None
) -> None:
    off = shipped.for_organization("daegu").working_time.off_hours(kst(moment), "welfare", "u_1")
    assert (off.reason if off else None) == reason


def test_times_are_judged_in_the_organisations_time_zone() -> None:
    policies = parse_policies(doc(time_zone="Europe/London", working_hours={"holidays": None}), "p")
    working = policies.defaults.working_time
    # 17:30 in Seoul is 09:30 in London (summer time): office hours there.
    assert working.off_hours(kst("2024-07-02T17:30"), "x", "u") is None
    assert working.off_hours(kst("2024-07-02T10:00"), "x", "u") is not None


@pytest.mark.parametrize(
    ("department", "user", "moment", "reason"),
    [
        ("digital-policy", "u_1", "2024-09-19T21:30", None),  # remote work to 22:00
        ("digital-policy", "u_1", "2024-09-19T21:59", None),
        ("digital-policy", "u_1", "2024-09-19T22:40", "after_hours"),  # a schedule: no grace
        ("digital-policy", "u_1", "2024-09-19T23:30", "after_hours"),
        ("digital-policy", "u_1", "2024-09-21T12:00", "weekend"),
        ("welfare", "u_1", "2024-09-19T21:30", "after_hours"),
        ("press-office", "u_1", "2024-09-21T12:00", None),  # weekend duty
        ("press-office", "u_1", "2024-09-22T16:45", None),
        ("press-office", "u_1", "2024-09-22T17:15", "weekend"),  # no grace on a schedule
        ("press-office", "u_1", "2024-09-17T12:00", "holiday"),  # not on holidays
        ("safety", "u_1", "2024-09-17T03:00", None),  # 24-hour shifts, holidays too
        ("welfare", NIGHT_USER, "2024-09-22T02:00", None),  # a named night shift
        ("welfare", NIGHT_USER, "2024-09-17T23:30", None),
        ("welfare", NIGHT_USER, "2024-09-19T11:00", None),  # office hours still apply
        ("welfare", NIGHT_USER, "2024-09-21T12:00", "weekend"),
    ],
)
def test_remote_work_overtime_and_shifts_are_working_time(
    shipped: PolicySet, department: str, user: str, moment: str, reason: str | None
) -> None:
    document = yaml.safe_load(SHIPPED.read_text())
    document["organizations"]["seoul"]["schedules"].append(
        {
            "name": "welfare-night-shift",
            "users": [NIGHT_USER],
            "start": "22:00",
            "end": "07:00",
            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "holidays": True,
        }
    )
    working = parse_policies(document, "p.yaml").for_organization("seoul").working_time
    off = working.off_hours(kst(moment), department, user)
    assert (off.reason if off else None) == reason


def test_a_schedule_applies_only_in_its_validity_period(shipped: PolicySet) -> None:
    working = shipped.for_organization("gyeonggi").working_time
    assert working.off_hours(kst("2024-11-05T22:00"), "planning-budget", "u_1") is None
    off = working.off_hours(kst("2024-10-07T22:00"), "planning-budget", "u_1")
    assert off is not None and off.reason == "after_hours"
    assert working.off_hours(kst("2025-01-06T22:00"), "planning-budget", "u_1") is not None


@pytest.mark.parametrize(
    ("moment", "department", "user", "reason"),
    [
        ("2024-09-19T22:40", "digital-policy", "u_1", None),  # remote work's own 45 minutes
        ("2024-09-19T22:50", "digital-policy", "u_1", "after_hours"),
        ("2024-09-19T06:20", "digital-policy", "u_1", None),  # ... on both sides
        ("2024-09-20T07:25", "welfare", NIGHT_USER, "after_hours"),  # the night shift: none
        ("2024-09-19T18:30", "welfare", "u_1", "after_hours"),  # the office's own 20 minutes
        ("2024-09-19T18:15", "welfare", "u_1", None),
    ],
)
def test_each_schedule_has_its_own_grace(
    moment: str, department: str, user: str, reason: str | None
) -> None:
    document = doc(
        working_hours={"grace_minutes": 20},
        schedules=[
            {"name": "it-remote", "departments": ["digital-policy"], "start": "07:00",
             "end": "22:00", "grace_minutes": 45},
            {"name": "night", "users": [NIGHT_USER], "start": "22:00", "end": "07:00"},
        ],
    )  # fmt: skip
    working = parse_policies(document, "p.yaml").defaults.working_time
    assert working.grace.total_seconds() == 20 * 60
    assert [s.grace_seconds for s in working.schedules] == [45 * 60, 0]
    off = working.off_hours(kst(moment), department, user)
    assert (off.reason if off else None) == reason


def test_a_bad_schedule_grace_names_the_file_the_line_and_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(
        'version: "t"\n'
        "defaults:\n"
        "  schedules:\n"
        "    - name: it-remote\n"
        "      departments: [digital-policy]\n"
        '      start: "07:00"\n'
        '      end: "22:00"\n'
        "      grace_minutes: 90 min\n",
        encoding="utf-8",
    )
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    assert str(info.value) == (
        f"{path}:8: defaults.schedules[0].grace_minutes: must be a whole number of minutes "
        "between 0 and 720, got '90 min'"
    )


# --- the file's lines -------------------------------------------------------------------------

LINED = """\
version: "t"
defaults:
  working_hours:
    start: "09:00"
    end: "18:00"
  detectors:
    volume_spike: {factor: 5}
  budgets:
    monthly_krw: "5000000"
    thresholds: {50: low, 80: medium}
  alerts:
    webhooks:
      high: ["https://hooks.example.com/a"]
organizations:
  jeju:
    budgets:
      departments: {welfare: "800000"}
"""
WELFARE = '{welfare: "800000"}\n'


@pytest.mark.parametrize(
    ("old", "new", "line", "where", "reason"),
    [
        ('end: "18:00"', "end: 1800", 5, "defaults.working_hours.end", 'a quoted "HH:MM"'),
        ("factor: 5", "factor: 0.5", 7, "defaults.detectors.volume_spike.factor",
         "must be between 1 and 1e+09, got 0.5"),
        ("80: medium", "80: loud", 10, "defaults.budgets.thresholds.80", "'loud' is not one of"),
        ('/a"]', '/a", 7]', 13,
         "defaults.alerts.webhooks.high[1]", "must be a URL or {env: VARIABLE}"),
        ('welfare: "800000"', "welfare: 0.5", 17, "organizations.jeju.budgets.departments.welfare",
         "must be a whole number or a quoted decimal"),
        (WELFARE, WELFARE + "    colour: blue\n", 18, "organizations.jeju",
         "unknown keys ['colour']"),
        (WELFARE, WELFARE + "    shape: round\n    colour: blue\n", 18, "organizations.jeju",
         "unknown keys ['colour', 'shape']"),
    ],
)  # fmt: skip
def test_errors_in_a_file_name_the_line_of_the_value(
    tmp_path: Path, old: str, new: str, line: int, where: str, reason: str
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(LINED.replace(old, new), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {where}: "), message
    assert reason in message


def test_a_file_without_the_mistake_loads(tmp_path: Path) -> None:
    # The file the tests above break is itself valid.
    path = tmp_path / "policies.yaml"
    path.write_text(LINED, encoding="utf-8")
    jeju = load_policies(path).for_organization("jeju")
    assert jeju.budget.departments["welfare"] == BudgetAmounts(Decimal("800000"))
    assert jeju.detectors.volume_spike.factor == 5.0


@pytest.mark.parametrize(
    ("old", "new", "line", "where", "first"),
    [
        ('    end: "18:00"\n', '    end: "18:00"\n    start: "08:00"\n', 6,
         "defaults.working_hours.start", 4),
        ("monthly_krw: \"5000000\"\n", "monthly_krw: \"5000000\"\n    monthly_krw: \"1\"\n", 10,
         "defaults.budgets.monthly_krw", 9),
        ("{factor: 5}", "{factor: 5, factor: 50}", 7, "defaults.detectors.volume_spike.factor", 7),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_refused_with_both_lines(
    tmp_path: Path, old: str, new: str, line: int, where: str, first: int
) -> None:
    # PyYAML alone would keep the last value silently: the later start, the smaller budget.
    path = tmp_path / "policies.yaml"
    path.write_text(LINED.replace(old, new), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    assert str(info.value) == (
        f"{path}:{line}: {where}: the key is given twice (first on line {first})"
    )
