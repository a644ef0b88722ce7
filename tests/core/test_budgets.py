"""Budget status from the rollups of the embedded ClickHouse engine: spend at every level of
the calendar, thresholds at their exact boundaries, and the run-rate forecast."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.budgets import (
    ORGANIZATION,
    Budget,
    Period,
    PeriodKind,
    budgets_of,
    lookback_days,
    status,
    statuses,
)
from civicmeter.core.store.budgets import load_ledger
from civicmeter.policy.budgets import BudgetThreshold
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.sink.event_writer import write_events
from tests.factories import event

KST = ZoneInfo("Asia/Seoul")
_ids = itertools.count()
THRESHOLDS = (
    BudgetThreshold(50, "low"),
    BudgetThreshold(80, "medium"),
    BudgetThreshold(100, "high"),
)
CORRECTION_COLUMNS = (
    "organization_id", "department_id", "user_id", "event_id", "event_time", "service_id",
    "provider_name", "request_model", "operation_name", "purpose", "cost_delta_krw",
    "from_price_version", "to_price_version", "run_id", "corrected_time",
)  # fmt: skip


def kst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=KST)


def charge(
    when: str, cost: str, org: str = "seoul", dept: str = "welfare", *, seat: bool = False
) -> pb.RatedUsageEvent:
    """A rated event at `when` (KST) costing `cost` KRW: a seat-month charge or metered use."""
    changes: dict[str, Any] = {}
    if seat:
        changes = {"service_id": "chatgpt", "request_model": "", "operation_name": "subscription",
                   "usage": pb.Usage(seat_months=1)}  # fmt: skip
    e = event(event_id=f"b-{next(_ids)}", organization_id=org, department_id=dept,
              event_time=kst(when).astimezone(UTC), **changes)  # fmt: skip
    rated = pb.RatedUsageEvent(event=e, cost_krw=cost, price_version="v1")
    rated.rated_time.CopyFrom(e.event_time)
    return rated


def correct(client: Client, rated: pb.RatedUsageEvent, delta: str) -> None:
    """A re-rating delta of `rated`, as the re-rating job writes it."""
    e = rated.event
    millis = e.event_time.ToMilliseconds()
    client.insert(
        "cost_corrections",
        [[e.organization_id, e.department_id, e.user_id, e.event_id, millis, e.service_id,
          e.provider_name, e.request_model, e.operation_name, e.purpose, Decimal(delta),
          "v1", "v2", "run-1", millis]],
        column_names=CORRECTION_COLUMNS,
    )  # fmt: skip


def budget(
    amount: str, kind: PeriodKind = "month", dept: str = ORGANIZATION, days: int = 7
) -> Budget:
    return Budget("seoul", dept, kind, Decimal(amount), THRESHOLDS, days)


# --- spend to date ---------------------------------------------------------------------------


def test_spend_adds_months_days_and_hours_with_seats_and_rerating(clickhouse: Client) -> None:
    nov_3 = charge("2026-11-03T14:00", "1000.250000")
    write_events(
        clickhouse,
        [
            charge("2025-12-31T23:59", "900000"),  # last fiscal year
            charge("2026-01-01T00:00", "100"),  # the year's first instant
            charge("2026-03-15T10:00", "2000", dept="safety"),
            charge("2026-10-31T23:59:59", "300"),
            charge("2026-11-01T00:00", "29000", seat=True),  # the month's first instant
            nov_3,
            charge("2026-11-21T09:10", "40"),
            charge("2026-11-21T10:45", "7"),  # later in as_of's hour: counted
            charge("2026-11-21T11:00", "5000"),  # the next hour: not yet
            charge("2026-12-01T00:00", "8000"),  # next month
            charge("2026-11-05T10:00", "777", org="busan"),  # another organisation
        ],
    )
    correct(clickhouse, nov_3, "-0.250001")
    ledger = load_ledger(clickhouse, kst("2026-11-21T10:30"))
    assert ledger.through == kst("2026-11-21T11:00")
    month, year = Period("month", date(2026, 11, 1)), Period("year", date(2026, 1, 1))
    expected_month = Decimal("29000") + Decimal("999.999999") + 40 + 7
    org_month = status(ledger, budget("100000"), month)
    assert org_month.spent == expected_month
    assert org_month.remaining == Decimal("100000") - expected_month
    assert org_month.percent == Decimal("30.04")  # 30.046...: rounded down
    org_year = status(ledger, budget("1000000", "year"), year)
    assert org_year.spent == expected_month + 100 + 2000 + 300
    welfare_year = status(ledger, budget("1000000", "year", "welfare"), year)
    assert welfare_year.spent == expected_month + 100 + 300
    assert status(ledger, budget("10", dept="safety"), month).spent == 0
    # The previous fiscal year, closed: read from whole months; no forecast.
    closed = status(ledger, budget("1000000", "year"), year.previous)
    assert (closed.spent, closed.forecast) == (Decimal("900000"), None)


def test_spend_as_of_a_month_start_is_nothing_yet(clickhouse: Client) -> None:
    write_events(clickhouse, [charge("2026-10-31T23:59", "500"), charge("2026-11-01T00:00", "1")])
    ledger = load_ledger(clickhouse, kst("2026-11-01T00:00"))
    assert ledger.through == kst("2026-11-01T00:00")
    assert status(ledger, budget("1000"), Period("month", date(2026, 11, 1))).spent == 0
    assert status(ledger, budget("1000"), Period("month", date(2026, 10, 1))).spent == 500
    assert status(ledger, budget("1000", "year"), Period("year", date(2026, 1, 1))).spent == 500


# --- thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "crossed"),
    [
        ("499999.999999", []),
        ("500000", [50]),
        ("799999.999999", [50]),
        ("800000", [50, 80]),
        ("999999.999999", [50, 80]),
        ("1000000", [50, 80, 100]),
        ("2500000", [50, 80, 100]),
    ],
)
def test_a_threshold_is_crossed_at_exactly_its_share(
    clickhouse: Client, spent: str, crossed: list[int]
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", spent)])
    ledger = load_ledger(clickhouse, kst("2026-11-21T10:30"))
    result = status(ledger, budget("1000000"), Period("month", date(2026, 11, 1)))
    assert [t.percent for t in result.crossed] == crossed
    assert [t.amount for t in result.thresholds] == [500000, 800000, 1000000]
    assert [t.severity for t in result.thresholds] == ["low", "medium", "high"]


# --- forecast --------------------------------------------------------------------------------


def november(client: Client) -> None:
    """Ten welfare seats charged on the 1st of October and of November (290,000 KRW each
    month); metered use of 4,000 KRW a day on October 1-25, 5,000 a day (welfare) on November
    1-13 and 10,000 a day (IT) on November 14-20."""
    events = [
        charge(f"2026-{m}-01T00:00", "29000", seat=True) for m in ("10", "11") for _ in range(10)
    ]
    events += [charge(f"2026-10-{d:02d}T10:00", "4000") for d in range(1, 26)]
    events += [charge(f"2026-11-{d:02d}T10:00", "5000") for d in range(1, 14)]
    events += [charge(f"2026-11-{d:02d}T10:00", "10000", dept="it") for d in range(14, 21)]
    write_events(client, events)


def test_the_forecast_adds_the_run_rate_and_the_seat_charges_to_come(clickhouse: Client) -> None:
    november(clickhouse)
    ledger = load_ledger(clickhouse, kst("2026-11-21T00:00"))
    month = status(ledger, budget("500000"), Period("month", date(2026, 11, 1)))
    assert month.spent == 290000 + 13 * 5000 + 7 * 10000  # 425,000
    forecast = month.forecast
    assert forecast is not None
    assert (forecast.daily_run_rate, forecast.run_rate_days) == (Decimal(10000), 7)
    assert forecast.recurring_charges == 0  # November's seats are booked
    assert forecast.projected_spend == 425000 + 10 * 10000  # ten days left
    assert forecast.projected_overrun == 25000
    assert forecast.exhaustion_date == date(2026, 11, 28)  # 75,000 more at 10,000 a day: 7.5 days
    year = status(ledger, budget("1200000", "year"), Period("year", date(2026, 1, 1)))
    assert year.spent == 290000 + 25 * 4000 + 425000  # October's and November's: 815,000
    forecast = year.forecast
    assert forecast is not None
    # The rest of November, December's seats on the 1st and 31 days at the run-rate.
    assert forecast.recurring_charges == 290000
    assert forecast.projected_spend == 815000 + 100000 + 290000 + 31 * 10000
    assert forecast.exhaustion_date == date(2026, 12, 1)  # 915,000 + 290,000 on the 1st
    # Welfare had no metered use in the last 7 days; IT's is its whole run-rate.
    welfare = status(ledger, budget("10000000", dept="welfare"), Period("month", date(2026, 11, 1)))
    assert welfare.forecast is not None
    assert welfare.forecast.daily_run_rate == 0
    assert welfare.forecast.projected_spend == welfare.spent
    assert welfare.forecast.exhaustion_date is None
    it = status(ledger, budget("100000", dept="it"), Period("month", date(2026, 11, 1)))
    assert it.forecast is not None
    assert it.forecast.projected_spend == 70000 + 100000
    assert it.forecast.exhaustion_date == date(2026, 11, 24)  # 30,000 more: 3 days


def test_before_the_seats_are_booked_last_months_are_expected(clickhouse: Client) -> None:
    november(clickhouse)
    ledger = load_ledger(clickhouse, kst("2026-12-01T00:00"))
    december = status(ledger, budget("600000"), Period("month", date(2026, 12, 1)))
    forecast = december.forecast
    assert december.spent == 0 and forecast is not None
    # The run-rate's week is November 24-30, with no metered use.
    assert (forecast.daily_run_rate, forecast.run_rate_days) == (Decimal(0), 7)
    assert forecast.recurring_charges == 290000
    assert forecast.projected_spend == 290000
    assert forecast.exhaustion_date is None
    tight = status(ledger, budget("200000"), Period("month", date(2026, 12, 1)))
    assert tight.forecast is not None
    assert tight.forecast.exhaustion_date == date(2026, 12, 1)  # when the seats are charged


def test_early_in_a_month_the_run_rate_reads_the_previous_one(clickhouse: Client) -> None:
    november(clickhouse)
    ledger = load_ledger(clickhouse, kst("2026-11-03T00:00"))
    forecast = status(ledger, budget("1000000"), Period("month", date(2026, 11, 1))).forecast
    assert forecast is not None
    # October 27-31 (no metered use after the 25th) and November 1-2: 2 × 5,000 over 7 days.
    assert (forecast.daily_run_rate, forecast.run_rate_days) == (Decimal("1428.571429"), 7)


def test_a_new_organisations_run_rate_counts_only_its_own_days(clickhouse: Client) -> None:
    write_events(
        clickhouse, [charge(f"2026-11-{d}T10:00", "3000", org="sejong") for d in (18, 19, 20)]
    )
    ledger = load_ledger(clickhouse, kst("2026-11-21T09:00"))
    sejong = Budget("sejong", ORGANIZATION, "month", Decimal(100000), THRESHOLDS, 7)
    forecast = status(ledger, sejong, Period("month", date(2026, 11, 1))).forecast
    assert forecast is not None
    assert (forecast.daily_run_rate, forecast.run_rate_days) == (Decimal(3000), 3)


def test_a_ledger_too_short_for_the_run_rate_is_refused(clickhouse: Client) -> None:
    ledger = load_ledger(clickhouse, kst("2026-11-21T09:00"), lookback_days=7)
    with pytest.raises(ValueError, match="holds days from 2026-11-01"):
        status(ledger, budget("1000", days=30), Period("month", date(2026, 11, 1)))


# --- budgets from the policy -------------------------------------------------------------------


@pytest.fixture
def policies() -> PolicySet:
    return parse_policies(
        {
            "version": "t",
            "defaults": {"budgets": {"departments": {"welfare": "300000"}}},
            "organizations": {
                "seoul": {
                    "budgets": {
                        "monthly_krw": "5000000",
                        "yearly_krw": "60000000",
                        "departments": {"it": {"yearly_krw": "9000000"}},
                        "forecast": {"lookback_days": 14},
                    }
                },
                "jeju": {"budgets": {"departments": {"welfare": None}}},
            },
        },
        "p.yaml",
    )


def test_budgets_come_from_the_policy_organisation_first(policies: PolicySet) -> None:
    found = budgets_of(policies.for_organization("seoul"), "seoul")
    assert [(b.kind, b.department_id, b.amount) for b in found] == [
        ("month", ORGANIZATION, Decimal(5000000)),
        ("month", "welfare", Decimal(300000)),
        ("year", ORGANIZATION, Decimal(60000000)),
        ("year", "it", Decimal(9000000)),
    ]
    assert budgets_of(policies.for_organization("jeju"), "jeju") == []
    assert [b.kind for b in budgets_of(policies.for_organization("seoul"), "seoul", ["year"])] == [
        "year",
        "year",
    ]
    assert lookback_days(policies) == 14


def test_statuses_cover_the_listed_organisations_and_those_with_spend(
    clickhouse: Client, policies: PolicySet
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", "1000", org="busan")])
    ledger = load_ledger(clickhouse, kst("2026-11-21T10:30"), lookback_days=lookback_days(policies))
    every = statuses(ledger, policies)
    # busan is not listed: the defaults' welfare budget applies to it, as to seoul.
    assert [(s.budget.organization_id, s.period.label, s.budget.department_id) for s in every] == [
        ("busan", "2026-11", "welfare"),
        ("seoul", "2026-11", ORGANIZATION),
        ("seoul", "2026-11", "welfare"),
        ("seoul", "2026", ORGANIZATION),
        ("seoul", "2026", "it"),
    ]
    assert every[0].spent == 1000
    only = statuses(ledger, policies, organization_id="seoul", kinds=["year"])
    assert [s.budget.department_id for s in only] == [ORGANIZATION, "it"]
