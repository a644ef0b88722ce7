"""Budget statuses as the client hands them out: money as Decimal KRW, times as datetime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.money import from_money
from civicmeter.api.severity import SEVERITY_NAMES, Severity

BudgetPeriod = Literal["month", "fiscal_year"]
BUDGET_PERIODS: dict[str, budget_pb.BudgetPeriod.ValueType] = {
    "month": budget_pb.BUDGET_PERIOD_MONTH,
    "fiscal_year": budget_pb.BUDGET_PERIOD_FISCAL_YEAR,
}
_PERIOD_NAMES: dict[int, BudgetPeriod] = {
    budget_pb.BUDGET_PERIOD_MONTH: "month",
    budget_pb.BUDGET_PERIOD_FISCAL_YEAR: "fiscal_year",
}


@dataclass(frozen=True)
class BudgetThreshold:
    percent: int
    severity: Severity
    amount_krw: Decimal  # the spend at which it is crossed
    crossed: bool


@dataclass(frozen=True)
class BudgetForecast:
    projected_spend_krw: Decimal  # by the period's end
    projected_overrun_krw: Decimal  # 0 when none
    exhaustion_date: date | None  # None: not within the period, or already spent
    daily_run_rate_krw: Decimal  # metered spend per day
    run_rate_days: int
    upcoming_seat_charges_krw: Decimal


@dataclass(frozen=True)
class BudgetStatus:
    organization_id: str
    department_id: str  # "" for the organisation's own budget
    period: BudgetPeriod
    period_start: datetime
    period_end: datetime
    budget_krw: Decimal
    spent_krw: Decimal
    spent_through: datetime  # spend counts the events before this
    remaining_krw: Decimal  # negative when overspent
    percent_spent: Decimal
    thresholds: tuple[BudgetThreshold, ...]
    forecast: BudgetForecast | None


def budget_status_of(message: budget_pb.BudgetStatus) -> BudgetStatus:
    forecast = None
    if message.HasField("forecast"):
        f = message.forecast
        day = f.projected_exhaustion_date
        forecast = BudgetForecast(
            projected_spend_krw=from_money(f.projected_spend),
            projected_overrun_krw=from_money(f.projected_overrun),
            exhaustion_date=date(day.year, day.month, day.day)
            if f.HasField("projected_exhaustion_date")
            else None,
            daily_run_rate_krw=from_money(f.daily_run_rate),
            run_rate_days=f.run_rate_days,
            upcoming_seat_charges_krw=from_money(f.upcoming_seat_charges),
        )
    return BudgetStatus(
        organization_id=message.organization_id,
        department_id=message.department_id,
        period=_PERIOD_NAMES[message.period],
        period_start=message.period_start_time.ToDatetime(tzinfo=UTC),
        period_end=message.period_end_time.ToDatetime(tzinfo=UTC),
        budget_krw=from_money(message.budget_amount),
        spent_krw=from_money(message.spent_amount),
        spent_through=message.spent_through_time.ToDatetime(tzinfo=UTC),
        remaining_krw=from_money(message.remaining_amount),
        percent_spent=Decimal(message.percent_spent.value),
        thresholds=tuple(
            BudgetThreshold(t.percent, SEVERITY_NAMES[t.severity], from_money(t.amount), t.crossed)
            for t in message.thresholds
        ),
        forecast=forecast,
    )
