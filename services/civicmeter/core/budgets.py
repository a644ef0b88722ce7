"""Budget status from the billing rollups: spent to date, thresholds, remaining, forecast.

A budget is what an organisation, or one of its departments, may spend in an Asia/Seoul month
or fiscal year (the calendar year, as in Korea): see policy.budgets. Spend is read
from the rollups, never from usage_events; they hold every rated event, the seat charges the
billing job books and the re-rating deltas (core.store.budgets.load_ledger reads them). Spend as
of a moment counts every event up to the end of the moment's hour (for the present moment:
every event stored):

- the whole months before the moment's month: usage_rollup_1mo_departments;
- the whole days of the moment's month before its day: usage_rollup_1d (Seoul days);
- the moment's day, hour by hour: usage_rollup_1h.

The forecast. Most of the spend is seat subscriptions, charged a whole month at a time (on the
1st, or when a seat starts); the rest is metered use that accrues day by day. A straight line
through spent / elapsed share of the period would take the seat charges booked on the 1st for a
month's pace and project many times the budget on the 2nd, so the two are projected apart:

- metered use at its run-rate: metered spend per day over the last `lookback_days` whole days
  (default 7: a whole week, so weekends weigh what they do), wherever months begin, so the
  forecast is steady from a period's first day. Days before an organisation's first stored
  day are not counted (a new organisation's rate is not diluted by days it did not exist);
- seat charges as a monthly amount: this month's once any are booked, else last month's (still
  to come this month), and the same again for each month the period has left.

projected = spent + this month's seat charges still to come + run-rate × days left
            + monthly seat charges × months left after this one;

the exhaustion date is where that path first reaches the budget. Money stays Decimal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Literal

from civicmeter.api.money import quantize_cost
from civicmeter.api.seoul import SEOUL, next_month
from civicmeter.api.severity import Severity
from civicmeter.policy.budgets import BudgetThreshold
from civicmeter.policy.organization import OrganizationPolicy, PolicySet

ORGANIZATION = ""  # the department id of an organisation's own budget (events always name one)
PeriodKind = Literal["month", "year"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("month", "year")
_HUNDRED = Decimal(100)
_DAY_SECONDS = 86_400
_ZERO = Decimal(0)


# --- periods and budgets ----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    kind: PeriodKind
    start: date  # the first day (Asia/Seoul)

    @classmethod
    def containing(cls, kind: PeriodKind, moment: datetime) -> Period:
        day = moment.astimezone(SEOUL).date()
        return cls(kind, date(day.year, day.month if kind == "month" else 1, 1))

    @property
    def end(self) -> date:
        """The first day after the period."""
        if self.kind == "year":
            return date(self.start.year + 1, 1, 1)
        return next_month(self.start)

    @property
    def previous(self) -> Period:
        if self.kind == "year":
            return Period("year", date(self.start.year - 1, 1, 1))
        return Period("month", (self.start - timedelta(days=1)).replace(day=1))

    @property
    def label(self) -> str:
        """The period in dedup keys and attributes: 2026-11, or 2026 for the fiscal year."""
        return f"{self.start:%Y-%m}" if self.kind == "month" else f"{self.start:%Y}"

    @property
    def start_time(self) -> datetime:
        return seoul_midnight(self.start)

    @property
    def end_time(self) -> datetime:
        return seoul_midnight(self.end)


@dataclass(frozen=True)
class Budget:
    organization_id: str
    department_id: str  # ORGANIZATION for the organisation's own budget
    kind: PeriodKind
    amount: Decimal
    thresholds: tuple[BudgetThreshold, ...]
    lookback_days: int

    @property
    def sort_key(self) -> tuple[str, int, str]:
        return (self.organization_id, PERIOD_KINDS.index(self.kind), self.department_id)


def budgets_of(
    policy: OrganizationPolicy, organization_id: str, kinds: Iterable[PeriodKind] = PERIOD_KINDS
) -> list[Budget]:
    """The organisation's budgets under its policy: its own first, then its departments'."""
    rules = policy.budget
    scopes = [(ORGANIZATION, rules.monthly_krw, rules.yearly_krw)]
    scopes += [(d, a.monthly_krw, a.yearly_krw) for d, a in sorted(rules.departments.items())]
    found: list[Budget] = []
    for kind in kinds:
        for department, monthly, yearly in scopes:
            amount = monthly if kind == "month" else yearly
            if amount is not None:
                found.append(
                    Budget(
                        organization_id,
                        department,
                        kind,
                        amount,
                        rules.thresholds,
                        rules.lookback_days,
                    )
                )
    return sorted(found, key=lambda b: b.sort_key)


# --- the ledger as the rollups hold it ----------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    total: Decimal = _ZERO
    seats: Decimal = _ZERO  # seat charges (and their re-rating), part of total

    @property
    def metered(self) -> Decimal:
        return self.total - self.seats

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.total + other.total, self.seats + other.seats)


_NOTHING = Spend()
Scope = tuple[str, str]  # (organisation, department or ORGANIZATION)


@dataclass(frozen=True)
class Ledger:
    """Spend by organisation and department (ORGANIZATION: all of them) around a moment."""

    as_of: datetime
    through: datetime  # spend counts events before this: the end of as_of's hour
    month_start: date  # as_of's month (Asia/Seoul)
    day: date  # as_of's day
    days_from: date  # the first day `days` covers (a month start)
    months: Mapping[tuple[str, str, date], Spend]  # whole months before month_start
    days: Mapping[tuple[str, str, date], Spend]  # whole days from days_from to day
    today: Mapping[Scope, Spend]  # the day of as_of, through `through`

    def organizations(self) -> set[str]:
        found = {org for org, _, _ in self.months} | {org for org, _, _ in self.days}
        return found | {org for org, _ in self.today}

    def spent(self, scope: Scope, start: date, end: date) -> Spend:
        """Spend of `scope` from `start` (a month start) to `end`, as far as `through`."""
        org, department = scope
        total = _NOTHING
        month = start
        while month < min(end, self.month_start):
            total += self.months.get((org, department, month), _NOTHING)
            month = next_month(month)
        day = max(start, self.month_start)
        while day < min(end, self.day):
            total += self.days.get((org, department, day), _NOTHING)
            day += timedelta(days=1)
        if start <= self.day < end:
            total += self.today.get(scope, _NOTHING)
        return total

    def run_rate(self, scope: Scope, lookback_days: int) -> tuple[Decimal, int]:
        """Metered spend per day over the last `lookback_days` whole days, and how many days
        that is (fewer for an organisation stored for fewer days; 0: no rate)."""
        org, department = scope
        first = self.day - timedelta(days=lookback_days)
        if first < self.days_from:
            raise ValueError(f"the ledger holds days from {self.days_from}, not from {first}")
        known = [d for (o, dep, d) in self.days if o == org and dep == ORGANIZATION]
        established = any(o == org and month < self.days_from for (o, _, month) in self.months)
        if not established:
            first = max(first, min(known, default=self.day))
        count = (self.day - first).days
        if count <= 0:
            return _ZERO, 0
        metered = sum(
            (
                self.days.get((org, department, first + timedelta(days=n)), _NOTHING).metered
                for n in range(count)
            ),
            _ZERO,
        )
        return quantize_cost(metered / count), count


def lookback_days(policies: PolicySet) -> int:
    """The longest run-rate window the policies ask for: what load_ledger must cover."""
    policies_ = (policies.defaults, *policies.organizations.values())
    return max(policy.budget.lookback_days for policy in policies_)


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdStatus:
    percent: int
    severity: Severity
    amount: Decimal  # the spend at which it is crossed
    crossed: bool


@dataclass(frozen=True)
class Forecast:
    projected_spend: Decimal  # by the period's end
    projected_overrun: Decimal  # over the budget; 0 when none
    exhaustion_date: date | None  # None: not reached within the period, or already reached
    daily_run_rate: Decimal  # metered spend per day
    run_rate_days: int  # the days it is the average of
    recurring_charges: Decimal  # seat charges still to come in the period


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    period: Period
    as_of: datetime
    through: datetime  # spend counts events before this
    spent: Decimal
    percent: Decimal  # of the budget spent, to two places (rounded down)
    thresholds: tuple[ThresholdStatus, ...]
    remaining: Decimal  # negative when overspent
    forecast: Forecast | None  # None for a period that has ended

    @property
    def crossed(self) -> tuple[ThresholdStatus, ...]:
        return tuple(t for t in self.thresholds if t.crossed)


def status(ledger: Ledger, budget: Budget, period: Period) -> BudgetStatus:
    """The budget's status in `period` as of the ledger's moment (the period may have ended;
    it must not start after the moment)."""
    scope = (budget.organization_id, budget.department_id)
    spent = ledger.spent(scope, period.start, period.end).total
    amount = budget.amount
    thresholds = tuple(
        ThresholdStatus(
            t.percent,
            t.severity,
            amount * t.percent / _HUNDRED,
            spent * _HUNDRED >= amount * t.percent,
        )
        for t in budget.thresholds
    )
    running = period.start <= ledger.day < period.end
    return BudgetStatus(
        budget=budget,
        period=period,
        as_of=ledger.as_of,
        through=ledger.through,
        spent=spent,
        percent=(spent * _HUNDRED / amount).quantize(Decimal("0.01"), rounding=ROUND_DOWN),
        thresholds=thresholds,
        remaining=amount - spent,
        forecast=_forecast(ledger, budget, period, scope, spent) if running else None,
    )


def statuses(
    ledger: Ledger,
    policies: PolicySet,
    organization_id: str | None = None,
    kinds: Iterable[PeriodKind] = PERIOD_KINDS,
) -> list[BudgetStatus]:
    """Every budget's status in the periods that contain the ledger's moment: of one
    organisation, or of every one the policy lists or the ledger has spend of."""
    kinds = tuple(kinds)
    organizations = (
        [organization_id]
        if organization_id is not None
        else sorted(set(policies.organizations) | ledger.organizations())
    )
    found: list[BudgetStatus] = []
    for org in organizations:
        for budget in budgets_of(policies.for_organization(org), org, kinds):
            found.append(status(ledger, budget, Period.containing(budget.kind, ledger.as_of)))
    return found


def _forecast(
    ledger: Ledger, budget: Budget, period: Period, scope: Scope, spent: Decimal
) -> Forecast:
    org, department = scope
    month_end = next_month(ledger.month_start)
    booked = ledger.spent(scope, ledger.month_start, month_end).seats
    last_month = Period("month", ledger.month_start).previous.start
    monthly_seats = booked or ledger.months.get((org, department, last_month), _NOTHING).seats
    to_come = monthly_seats - booked  # this month's, when none are booked yet
    rate, rate_days = ledger.run_rate(scope, budget.lookback_days)
    # The path ahead: this month's seat charges now, metered use at the run-rate, and the
    # monthly seat charges at each month start the period has left.
    level, moment = spent + to_come, ledger.through
    exhaustion = ledger.day if level >= budget.amount > spent else None
    recurring = to_come
    month = month_end
    while True:
        boundary = min(seoul_midnight(month), period.end_time)
        days = Decimal(max(0, int((boundary - moment).total_seconds()))) / _DAY_SECONDS
        if (
            exhaustion is None
            and level < budget.amount
            and rate
            and level + rate * days >= (budget.amount)
        ):
            seconds = ((budget.amount - level) / rate * _DAY_SECONDS).to_integral_value(
                ROUND_CEILING
            )
            exhaustion = _seoul_day(moment + timedelta(seconds=int(seconds)))
        level += rate * days
        moment = boundary
        if month >= period.end:
            break
        level += monthly_seats
        recurring += monthly_seats
        if exhaustion is None and level >= budget.amount > spent:
            exhaustion = month
        month = next_month(month)
    projected = quantize_cost(level)
    return Forecast(
        projected_spend=projected,
        projected_overrun=max(_ZERO, projected - budget.amount),
        exhaustion_date=exhaustion,
        daily_run_rate=rate,
        run_rate_days=rate_days,
        recurring_charges=recurring,
    )


# --- time ----------------------------------------------------------------------------------------


def seoul_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=SEOUL).astimezone(UTC)


def _seoul_day(moment: datetime) -> date:
    return moment.astimezone(SEOUL).date()
