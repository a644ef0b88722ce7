"""The policy decision: one test per rule, and how the rules combine."""

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from civicmeter.policy.decision import BudgetState, RequestFacts, Spent, decide
from civicmeter.policy.organization import OrganizationPolicy, parse_policies

KST = ZoneInfo("Asia/Seoul")
WORKDAY = datetime(2026, 12, 2, 10, 30, tzinfo=KST)  # a Wednesday morning
NIGHT = datetime(2026, 12, 2, 23, 30, tzinfo=KST)
SUNDAY = datetime(2026, 12, 6, 14, 0, tzinfo=KST)
CHATGPT = RequestFacts(
    department="welfare", user_id="u_1", provider="openai", service="chatgpt",
    account_kind="organizational",
)  # fmt: skip


def policy(**enforcement: Any) -> OrganizationPolicy:
    document = {
        "version": "t",
        "defaults": {
            "sanctioned_services": ["chatgpt", "claude"],
            "budgets": {
                "monthly_krw": "1000000",
                "yearly_krw": "10000000",
                "departments": {"welfare": {"monthly_krw": "200000", "yearly_krw": "2000000"}},
            },
            "enforcement": enforcement,
        },
    }
    return parse_policies(document, "p.yaml").for_organization("seoul")


def test_nothing_to_say_allows() -> None:
    decision = decide(policy(), CHATGPT, {}, {}, None, WORKDAY)
    assert decision.outcome == "ALLOW"
    assert decision.rule_ids == ()


@pytest.mark.parametrize(
    ("provider", "service"), [("deepseek", "deepseek-chat"), ("other", "deepseek")]
)
def test_a_banned_provider_is_denied_whatever_else_the_policy_says(
    provider: str, service: str
) -> None:
    lenient = policy(unsanctioned_service="warn", personal_account="warn")
    request = RequestFacts(provider=provider, service=service, account_kind="organizational")
    decision = decide(lenient, request, {}, {}, None, WORKDAY)
    assert decision.outcome == "DENY"
    assert decision.rule_ids == ("banned_provider",)
    assert "deepseek" in decision.reason_en and "금지" in decision.reason_ko


@pytest.mark.parametrize(("action", "outcome"), [("deny", "DENY"), ("warn", "ALLOW_WITH_WARNING")])
def test_an_unsanctioned_service_is_denied_or_warned_per_policy(action: str, outcome: str) -> None:
    request = RequestFacts(provider="google", service="gemini", account_kind="organizational")
    decision = decide(policy(unsanctioned_service=action), request, {}, {}, None, WORKDAY)
    assert decision.outcome == outcome
    assert decision.rule_ids == ("unsanctioned_service",)
    assert "gemini" in decision.reason_en and "승인" in decision.reason_ko


@pytest.mark.parametrize(("action", "outcome"), [("deny", "DENY"), ("warn", "ALLOW_WITH_WARNING")])
def test_a_personal_account_is_denied_or_warned_per_policy(action: str, outcome: str) -> None:
    request = RequestFacts(provider="openai", service="chatgpt", account_kind="personal")
    decision = decide(policy(personal_account=action), request, {}, {}, None, WORKDAY)
    assert decision.outcome == outcome
    assert decision.rule_ids == ("personal_account",)


@pytest.mark.parametrize(
    ("action", "outcome"),
    [("block", "DENY"), ("redact", "REDACT"), ("warn", "ALLOW_WITH_WARNING"), ("ignore", "ALLOW")],
)
def test_personal_information_per_type(action: str, outcome: str) -> None:
    rules = policy(personal_information={"types": {"kr_passport": action}})
    decision = decide(rules, CHATGPT, {"kr_passport": 2}, {}, None, WORKDAY)
    assert decision.outcome == outcome
    assert decision.rule_ids == (() if action == "ignore" else ("pii.kr_passport",))
    assert decision.redact_types == ({"kr_passport"} if action == "redact" else set())
    if action != "ignore":
        assert "여권번호" in decision.reason_ko and "2" in decision.reason_en


def test_a_type_the_policy_does_not_list_takes_the_default() -> None:
    rules = policy(personal_information={"default": "block"})
    assert decide(rules, CHATGPT, {"new_kind": 1}, {}, None, WORKDAY).outcome == "DENY"
    assert decide(rules, CHATGPT, {"kr_rrn": 1}, {}, None, WORKDAY).outcome == "REDACT"
    assert decide(rules, CHATGPT, {"kr_rrn": 0}, {}, None, WORKDAY).outcome == "ALLOW"


@pytest.mark.parametrize(
    ("action", "outcome"), [("block", "DENY"), ("warn", "ALLOW_WITH_WARNING"), ("ignore", "ALLOW")]
)
def test_document_markings_per_class(action: str, outcome: str) -> None:
    rules = policy(documents={"confidential": action})
    decision = decide(rules, CHATGPT, {}, {"confidential": 1}, None, WORKDAY)
    assert decision.outcome == outcome
    if action != "ignore":
        assert decision.rule_ids == ("document.confidential",)
        assert "대외비" in decision.reason_ko


def _state(
    org_month: str = "0", dept_month: str = "0", dept_year: str = "0", as_of: datetime = WORKDAY
) -> BudgetState:
    return BudgetState(
        as_of,
        Spent(Decimal(org_month), Decimal(org_month)),
        {"welfare": Spent(Decimal(dept_month), Decimal(dept_year))},
    )


def test_a_spent_department_budget_denies_with_the_figure() -> None:
    decision = decide(policy(), CHATGPT, {}, {}, _state(dept_month="200000.5"), WORKDAY)
    assert decision.outcome == "DENY"
    assert decision.rule_ids == ("budget.department.month",)
    assert "200,000" in decision.reason_en and "200,000원" in decision.reason_ko
    just_under = decide(policy(), CHATGPT, {}, {}, _state(dept_month="199999.99"), WORKDAY)
    assert just_under.outcome == "ALLOW"


def test_the_organisation_and_the_year_are_caps_too() -> None:
    org = decide(policy(), CHATGPT, {}, {}, _state(org_month="1000000"), WORKDAY)
    assert org.rule_ids == ("budget.organization.month",)
    year = decide(policy(), CHATGPT, {}, {}, _state(dept_year="2000000"), WORKDAY)
    assert year.rule_ids == ("budget.department.year",)
    other = RequestFacts(**{**_fields(CHATGPT), "department": "roads"})
    assert decide(policy(), other, {}, {}, _state(dept_month="9999999"), WORKDAY).outcome == "ALLOW"


def test_an_estimate_that_would_pass_the_cap_is_denied() -> None:
    costly = RequestFacts(**{**_fields(CHATGPT), "estimated_cost_krw": Decimal("1500")})
    assert decide(policy(), costly, {}, {}, _state(dept_month="199000"), WORKDAY).outcome == "DENY"
    assert decide(policy(), costly, {}, {}, _state(dept_month="198500"), WORKDAY).outcome == "ALLOW"


def test_last_months_spend_does_not_count_in_a_new_month() -> None:
    november = datetime(2026, 11, 30, 23, 59, 58, tzinfo=KST)
    state = _state(dept_month="300000", as_of=november)
    assert decide(policy(), CHATGPT, {}, {}, state, WORKDAY).outcome == "ALLOW"
    assert decide(policy(), CHATGPT, {}, {}, state, november).outcome == "DENY"


def test_budgets_can_only_warn() -> None:
    decision = decide(policy(budgets="warn"), CHATGPT, {}, {}, _state(dept_month="1e6"), WORKDAY)
    assert decision.outcome == "ALLOW_WITH_WARNING"


@pytest.mark.parametrize("when", [NIGHT, SUNDAY])
def test_outside_working_hours_warns_by_default(when: datetime) -> None:
    decision = decide(policy(), CHATGPT, {}, {}, None, when)
    assert decision.outcome == "ALLOW_WITH_WARNING"
    assert decision.rule_ids == ("off_hours",)


def test_outside_working_hours_may_require_a_declared_purpose() -> None:
    rules = policy(off_hours="require_purpose")
    denied = decide(rules, CHATGPT, {}, {}, None, NIGHT)
    assert denied.outcome == "DENY"
    assert denied.rule_ids == ("off_hours.purpose_required",)
    declared = RequestFacts(**{**_fields(CHATGPT), "purpose": "disaster-response"})
    assert decide(rules, declared, {}, {}, None, NIGHT).outcome == "ALLOW_WITH_WARNING"
    assert decide(rules, CHATGPT, {}, {}, None, WORKDAY).outcome == "ALLOW"
    assert decide(policy(off_hours="allow"), CHATGPT, {}, {}, None, NIGHT).outcome == "ALLOW"


def test_the_strongest_action_wins_and_deny_reasons_come_first() -> None:
    decision = decide(
        policy(),
        CHATGPT,
        {"email": 1, "kr_rrn": 1},
        {"confidential": 1},
        None,
        NIGHT,
    )
    assert decision.outcome == "DENY"
    assert decision.rule_ids[0] == "document.confidential"
    assert set(decision.rule_ids) == {
        "document.confidential",
        "pii.kr_rrn",
        "pii.email",
        "off_hours",
    }
    assert decision.reason_en.index("public-document") < decision.reason_en.index("kr_rrn")
    redacting = decide(policy(), CHATGPT, {"email": 1, "kr_rrn": 1}, {}, None, WORKDAY)
    assert redacting.outcome == "REDACT"
    assert redacting.redact_types == {"kr_rrn"}


def _fields(request: RequestFacts) -> dict[str, Any]:
    return {name: getattr(request, name) for name in RequestFacts.__slots__}
