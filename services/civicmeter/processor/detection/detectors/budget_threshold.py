"""An organisation's or a department's spend in a month crossing a share of its budget.

Spend is the rated cost of every event (seat charges included) in the organisation's local
month. Each threshold (50/80/100% by default) is raised once per budget and month, on the event
that crosses it; one event may cross several. Spend can be seeded at start-up from stored
month-to-date totals, so a restart neither forgets spend nor raises crossed thresholds again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from civicmeter.core.policy import BudgetPolicy, Severity
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS

ORGANIZATION = ""  # the department of an organisation-wide budget
_HUNDRED = Decimal(100)


@dataclass(slots=True)
class Spend:
    amount: Decimal
    alerted_percent: int = 0  # the highest threshold raised


class BudgetThresholdDetector:
    name = "budget_threshold"

    def __init__(self, periods: int) -> None:
        self._spend: LruMap[tuple[str, str, int], Spend] = LruMap(periods)

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if not ctx.cost:
            return NO_ALERTS
        budget = ctx.policy.budget
        alerts: list[Alert] = []
        if budget.monthly_krw is not None:
            self._add(ctx, budget, ORGANIZATION, budget.monthly_krw, alerts)
        department_budget = budget.departments.get(ctx.department_id)
        if department_budget is not None:
            self._add(ctx, budget, ctx.department_id, department_budget, alerts)
        return alerts

    def seed(
        self,
        organization_id: str,
        department_id: str,
        month: int,
        amount: Decimal,
        budget: BudgetPolicy,
    ) -> None:
        """Month-to-date spend (`month` as year * 100 + month); thresholds it already
        crossed are taken as raised."""
        limit = (
            budget.monthly_krw
            if department_id == ORGANIZATION
            else budget.departments.get(department_id)
        )
        spend = Spend(amount)
        if limit is not None:
            for threshold in budget.thresholds:
                if amount * _HUNDRED >= limit * threshold.percent:
                    spend.alerted_percent = threshold.percent
        self._spend.put((organization_id, department_id, month), spend)

    def _add(
        self,
        ctx: EventContext,
        budget: BudgetPolicy,
        department: str,
        limit: Decimal,
        alerts: list[Alert],
    ) -> None:
        key = (ctx.organization_id, department, ctx.month)
        spend = self._spend.get(key)
        if spend is None:
            spend = Spend(ctx.cost)
            self._spend.put(key, spend)
        else:
            spend.amount += ctx.cost
        for threshold in budget.thresholds:
            if threshold.percent <= spend.alerted_percent:
                continue
            if spend.amount * _HUNDRED < limit * threshold.percent:
                break
            spend.alerted_percent = threshold.percent
            alerts.append(
                self._alert(
                    ctx, department, limit, spend.amount, threshold.percent, threshold.severity
                )
            )

    def _alert(
        self,
        ctx: EventContext,
        department: str,
        limit: Decimal,
        amount: Decimal,
        percent: int,
        severity: Severity,
    ) -> Alert:
        org = ctx.organization_id
        who = f"Department {org}/{department}" if department else f"Organisation {org}"
        who_ko = f"{org}/{department} 부서" if department else f"{org} 기관"
        return ctx.alert(
            self.name,
            severity,
            (department or "*", ctx.month_label, str(percent)),
            f"{who} has spent {amount:,.0f} KRW in {ctx.month_label}, {percent}% or more of its "
            f"monthly budget of {limit:,.0f} KRW.",
            f"{who_ko}의 {ctx.month_label} 사용액이 {amount:,.0f}원으로 월 예산 {limit:,.0f}원의 "
            f"{percent}% 이상입니다.",
            {
                "scope": "department" if department else "organization",
                "month": ctx.month_label,
                "percent": str(percent),
                "budget_krw": str(limit),
                "spend_krw": str(amount),
            },
            department_id=department,
            user_id="",
            service_id="",
            provider_name="",
        )

    def __len__(self) -> int:
        return len(self._spend)
