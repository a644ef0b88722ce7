"""Budgets: what an organisation and its departments may spend in an Asia/Seoul month and in a
fiscal year (the calendar year), and the percentages of a budget at which an alert is raised.

    budgets:
      monthly_krw: "5000000"
      yearly_krw: "55000000"
      departments: {welfare: "800000", it: {monthly_krw: "900000", yearly_krw: "9000000"}}
      thresholds: {50: low, 80: medium, 100: high}  # or [50, 80, 100]
      forecast: {lookback_days: 7}                  # the run-rate's window

Budget periods are the billing rollups' calendar, whatever the organisation's time_zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from civicmeter.api.severity import Severity
from civicmeter.policy.document import ID, check_keys, integer, mapping, money, severity
from civicmeter.policy.yaml_source import At

_BUDGET_KEYS = ("monthly_krw", "yearly_krw", "departments", "thresholds", "forecast")


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


def parse_budgets(at: At, raw: Any) -> BudgetPolicy:
    block = mapping(at, raw)
    check_keys(at, block, _BUDGET_KEYS)
    organization = _budget_amounts(at, block)
    departments_at = at.key(block, "departments")
    departments = mapping(departments_at, block.get("departments") or {})
    budgets: dict[str, BudgetAmounts] = {}
    for department, entry in departments.items():
        entry_at = departments_at.key(departments, department)
        if not isinstance(department, str) or not ID.fullmatch(department):
            departments_at.on_line_of(departments, department).fail(
                f"{department!r} is not a department id"
            )
        if isinstance(entry, dict):
            check_keys(entry_at, entry, ("monthly_krw", "yearly_krw"))
            amounts = _budget_amounts(entry_at, entry)
        elif entry is None:  # lifts a budget the defaults set
            amounts = BudgetAmounts()
        else:  # the short form: a monthly budget
            amounts = BudgetAmounts(monthly_krw=money(entry_at, entry, positive=True))
        if amounts != BudgetAmounts():
            budgets[department] = amounts
    thresholds_at = at.key(block, "thresholds")
    raw_thresholds = block.get("thresholds", [50, 80, 100])
    thresholds: list[BudgetThreshold] = []
    if isinstance(raw_thresholds, dict):
        for percent, level in raw_thresholds.items():
            # The percentage's line: the severity sits on it, and the error may be either.
            percent_at = thresholds_at.label(raw_thresholds, percent)
            thresholds.append(
                BudgetThreshold(integer(percent_at, percent, 1, 1000), severity(percent_at, level))
            )
    elif isinstance(raw_thresholds, list):
        for index, percent in enumerate(raw_thresholds):
            value = integer(thresholds_at.item(raw_thresholds, index), percent, 1, 1000)
            thresholds.append(BudgetThreshold(value, _threshold_severity(value)))
    else:
        thresholds_at.fail(
            "must be a list of percentages, e.g. [50, 80, 100], "
            "or a mapping of percentage to severity, e.g. {50: low, 80: medium, 100: high}"
        )
    percents = [t.percent for t in thresholds]
    if len(set(percents)) != len(percents):
        thresholds_at.fail("a percentage appears twice")
    forecast_at = at.key(block, "forecast")
    forecast = mapping(forecast_at, block.get("forecast"))
    check_keys(forecast_at, forecast, ("lookback_days",))
    return BudgetPolicy(
        monthly_krw=organization.monthly_krw,
        yearly_krw=organization.yearly_krw,
        departments=MappingProxyType(budgets),
        thresholds=tuple(sorted(thresholds, key=lambda t: t.percent)),
        lookback_days=integer(
            forecast_at.key(forecast, "lookback_days"), forecast.get("lookback_days", 7), 1, 90
        ),
    )


def _budget_amounts(at: At, block: Mapping[str, Any]) -> BudgetAmounts:
    """monthly_krw and yearly_krw of `block`; null (or absent) means no budget."""
    monthly, yearly = (
        None if block.get(key) is None else money(at.key(block, key), block[key], positive=True)
        for key in ("monthly_krw", "yearly_krw")
    )
    if monthly is not None and yearly is not None and yearly < monthly:
        at.key(block, "yearly_krw").fail(
            f"{yearly} is less than monthly_krw {monthly} (the year's budget covers twelve months)"
        )
    return BudgetAmounts(monthly, yearly)
