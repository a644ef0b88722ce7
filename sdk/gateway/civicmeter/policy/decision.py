"""The policy decision for one AI request, before it leaves the gateway: a pure function.

    decide(policy, request, pii={"kr_rrn": 1}, markings={}, budget=state, now=now)
    -> Decision(outcome="REDACT", rules=(RuleHit("pii.kr_rrn", "redact", ...),), ...)

Each rule of the organisation's policy (organization.py, its `enforcement` block) that applies
gives a hit with an action; the outcome is the strongest action:

- DENY: a banned provider (always: DeepSeek is banned for every government), an unsanctioned
  service or a personal account (when the policy denies them), a finding type or document
  marking the policy blocks, a budget of the period already spent (the hard cap), or a request
  outside working hours without a declared purpose (when the policy requires one);
- REDACT: a finding type the policy redacts: the prompt goes out with those findings masked;
- ALLOW_WITH_WARNING: a rule that only warns;
- ALLOW: nothing applies.

The same function runs in the decision service (`Decide`) and in the gateway's Guard, over
the policy and budget state the service streams: the two decide alike. Reasons are in Korean
and English, each hit's own, the denying ones first. Money is Decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from civicmeter.api.seoul import SEOUL
from civicmeter.policy.organization import OrganizationPolicy

Outcome = Literal["ALLOW", "ALLOW_WITH_WARNING", "REDACT", "DENY"]
Action = Literal["deny", "redact", "warn"]
OUTCOMES: tuple[Outcome, ...] = ("ALLOW", "ALLOW_WITH_WARNING", "REDACT", "DENY")
_OUTCOME_OF: Mapping[Action, Outcome] = {
    "deny": "DENY",
    "redact": "REDACT",
    "warn": "ALLOW_WITH_WARNING",
}
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a gateway knows of a request before it leaves; never its text."""

    department: str = ""
    user_id: str = ""  # pseudonymised (keyed HMAC)
    provider: str = ""
    service: str = ""
    model: str = ""
    account_kind: str = ""  # organizational | personal | "" (unknown)
    purpose: str = ""  # the declared use case, if any
    estimated_cost_krw: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Spent:
    month_krw: Decimal = _ZERO
    year_krw: Decimal = _ZERO


@dataclass(frozen=True)
class BudgetState:
    """Spend of an organisation in the Asia/Seoul month and fiscal year of `as_of`, in total
    and per department, as the rollups held it at `as_of`."""

    as_of: datetime
    organization: Spent = Spent()
    departments: Mapping[str, Spent] = field(default_factory=lambda: MappingProxyType({}))

    def department(self, department: str) -> Spent:
        return self.departments.get(department, _NOTHING)


_NOTHING = Spent()


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule_id: str  # e.g. banned_provider, pii.kr_rrn, document.confidential, budget.department.month
    action: Action
    reason_ko: str
    reason_en: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    hits: tuple[RuleHit, ...] = ()
    redact_types: frozenset[str] = frozenset()  # the finding types to mask (REDACT)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(hit.rule_id for hit in self.hits)

    @property
    def reason_ko(self) -> str:
        return " ".join(hit.reason_ko for hit in self.hits)

    @property
    def reason_en(self) -> str:
        return " ".join(hit.reason_en for hit in self.hits)


ALLOW = Decision("ALLOW")
_RANK = {"deny": 0, "redact": 1, "warn": 2}


def decide(
    policy: OrganizationPolicy,
    request: RequestFacts,
    pii: Mapping[str, int],
    markings: Mapping[str, int],
    budget: BudgetState | None,
    now: datetime,
) -> Decision:
    """The decision on `request` under `policy` at `now` (an aware datetime)."""
    rules = policy.enforcement
    hits: list[RuleHit] = []
    provider, service = request.provider, request.service
    if policy.is_banned(provider, service):
        name = provider if provider in policy.banned_providers else service
        hits.append(
            RuleHit(
                "banned_provider",
                "deny",
                f"{name}은(는) 사용이 금지된 AI 서비스입니다.",
                f"{name} is a banned AI provider.",
            )
        )
    elif service and not policy.is_sanctioned(service):
        hits.append(
            RuleHit(
                "unsanctioned_service",
                rules.unsanctioned_service,
                f"{service}은(는) 기관이 승인하지 않은 서비스입니다.",
                f"{service} is not a service the organisation sanctioned.",
            )
        )
    if request.account_kind and request.account_kind not in policy.allowed_account_kinds:
        hits.append(
            RuleHit(
                "personal_account",
                rules.personal_account,
                "개인 계정으로는 사용할 수 없습니다.",
                f"A {request.account_kind} account may not be used.",
            )
        )
    redact: set[str] = set()
    for kind, count in sorted(pii.items()):
        if count <= 0:
            continue
        action = rules.finding_action(kind)
        if action == "ignore":
            continue
        if action == "redact":
            redact.add(kind)
        verb_ko, verb_en = _FINDING_VERBS[action]
        hits.append(
            RuleHit(
                f"pii.{kind}",
                "deny" if action == "block" else action,
                f"개인정보({_PII_KO.get(kind, kind)}) {count}건: {verb_ko}",
                f"{count} personal information finding(s) of type {kind}: {verb_en}",
            )
        )
    for marking, count in sorted(markings.items()):
        if count <= 0:
            continue
        marking_action = rules.marking_action(marking)
        if marking_action == "ignore":
            continue
        blocked = marking_action == "block"
        hits.append(
            RuleHit(
                f"document.{marking}",
                "deny" if blocked else "warn",
                f"공문서 표시({_MARKING_KO.get(marking, marking)}) {count}건: "
                + ("전송 차단." if blocked else "주의가 필요합니다."),
                f"{count} public-document marking(s) of class {marking}: "
                + ("blocked." if blocked else "take care."),
            )
        )
    if budget is not None:
        hits.extend(_budget_hits(policy, request, budget, now))
    off = policy.working_time.off_hours(now, request.department, request.user_id)
    if off is not None and rules.off_hours != "allow":
        when_ko = _OFF_KO[off.reason]
        if rules.off_hours == "require_purpose" and not request.purpose.strip():
            hits.append(
                RuleHit(
                    "off_hours.purpose_required",
                    "deny",
                    f"근무시간 외({when_ko}) 사용에는 업무 목적 신고가 필요합니다.",
                    f"Use outside working hours ({off.reason}) needs a declared purpose.",
                )
            )
        else:
            hits.append(
                RuleHit(
                    "off_hours",
                    "warn",
                    f"근무시간 외({when_ko}) 사용입니다.",
                    f"Use outside working hours ({off.reason}).",
                )
            )
    if not hits:
        return ALLOW
    hits.sort(key=lambda hit: _RANK[hit.action])
    outcome = _OUTCOME_OF[hits[0].action]
    return Decision(outcome, tuple(hits), frozenset(redact))


def _budget_hits(
    policy: OrganizationPolicy, request: RequestFacts, state: BudgetState, now: datetime
) -> list[RuleHit]:
    """A hit per budget whose period is spent (or that the request's estimate would pass).

    Spend of a month or year other than `now`'s counts nothing: a new period starts at zero.
    """
    found: list[RuleHit] = []
    rules = policy.budget
    here, then = now.astimezone(SEOUL), state.as_of.astimezone(SEOUL)
    same_year = here.year == then.year
    same_month = same_year and here.month == then.month
    extra = request.estimated_cost_krw or _ZERO
    department = rules.departments.get(request.department) if request.department else None
    scopes = [("organization", "기관", rules.monthly_krw, rules.yearly_krw, state.organization)]
    if department is not None:
        scopes.append(
            (
                "department",
                f"부서({request.department})",
                department.monthly_krw,
                department.yearly_krw,
                state.department(request.department),
            )
        )
    for scope, scope_ko, monthly, yearly, spent in scopes:
        for period, period_ko, cap, amount, current in (
            ("month", "이번 달", monthly, spent.month_krw, same_month),
            ("year", "올해", yearly, spent.year_krw, same_year),
        ):
            if cap is None:
                continue
            used = amount if current else _ZERO
            if used >= cap or (extra > 0 and used + extra > cap):
                scope_en = "organisation" if scope == "organization" else request.department
                found.append(
                    RuleHit(
                        f"budget.{scope}.{period}",
                        policy.enforcement.budgets,
                        f"{scope_ko} {period_ko} 예산 {cap:,.0f}원 중 {used:,.0f}원을 "
                        "사용했습니다.",
                        f"The {scope_en} {period}ly budget of KRW {cap:,.0f} is spent: "
                        f"KRW {used:,.0f} used.",
                    )
                )
    return found


_FINDING_VERBS = {
    "block": ("전송 차단.", "blocked."),
    "redact": ("가림 처리 후 전송.", "masked before sending."),
    "warn": ("주의가 필요합니다.", "take care."),
}
_PII_KO = {
    "kr_rrn": "주민등록번호",
    "kr_frn": "외국인등록번호",
    "kr_passport": "여권번호",
    "kr_driver_license": "운전면허번호",
    "bank_account": "계좌번호",
    "phone": "전화번호",
    "email": "이메일",
    "kr_brn": "사업자등록번호",
}
_MARKING_KO = {
    "classified": "비밀",
    "confidential": "대외비",
    "internal": "취급주의·내부용",
    "nondisclosure": "비공개",
    "document_number": "문서번호",
    "approval_block": "결재란",
    "personal_data": "개인정보 포함",
}
_OFF_KO = {"after_hours": "업무시간 외", "weekend": "주말", "holiday": "공휴일"}
