"""The budget monitor on the real broker and the embedded ClickHouse engine: threshold and
forecast alerts raised once per budget, period (and threshold) across rounds and restarts,
produced to usage.alerts and stored by the sink in the alert tables that ListAlerts,
WatchAlerts and the notifier read."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.billing.budget_monitor import BudgetMonitor, RoundResult
from civicmeter.billing.service import jobs
from civicmeter.core.config import BillingSettings, ClickHouseSettings
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.store.alerts import AlertFilter, list_alerts
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.policy.organization import PolicySet, parse_policies
from civicmeter.sink.event_writer import write_events
from tests.billing.delivery import Delivery
from tests.core.test_budgets import charge, kst, november

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "policies.yaml"
SEOUL_BUDGETS: dict[str, Any] = {
    "monthly_krw": "1000000",
    "yearly_krw": "2000000",
    "departments": {"welfare": "1000000"},
}


def policy(**seoul: Any) -> PolicySet:
    return parse_policies(
        {"version": "b-1", "organizations": {"seoul": {"budgets": SEOUL_BUDGETS, **seoul}}},
        "budgets.yaml",
    )


class Clock:
    def __init__(self, now: str) -> None:
        self.now = kst(now)

    def __call__(self) -> datetime:
        return self.now


class Restarted:
    """A monitor just started (nothing produced yet in its memory), each round followed by the
    sink's write of what it produced."""

    def __init__(self, delivery: Delivery, clock: Clock, policies: PolicySet | None) -> None:
        chosen = policies or policy()
        self.job = BudgetMonitor(delivery.storage, delivery.publisher, lambda: chosen, 60.0, clock)
        self.delivery = delivery

    async def round(self) -> RoundResult:
        result = await self.job.round()
        await self.delivery.drain()
        return result


def monitor(delivery: Delivery, clock: Clock, policies: PolicySet | None = None) -> Restarted:
    return Restarted(delivery, clock, policies)


def keys(alerts: list[alert_pb2.Alert]) -> list[str]:
    return sorted(a.dedup_key for a in alerts)


def stored(clickhouse: Client, table: str) -> int:
    return int(clickhouse.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])


async def test_thresholds_are_raised_once_across_rounds_and_restarts(
    clickhouse: Client, delivery: Delivery
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", "812000")])
    clock = Clock("2026-11-21T10:30")
    first = await monitor(delivery, clock).round()
    assert keys(first.raised) == [
        "budget_threshold|seoul|*|2026-11|50",
        "budget_threshold|seoul|*|2026-11|80",
        "budget_threshold|seoul|welfare|2026-11|50",
        "budget_threshold|seoul|welfare|2026-11|80",
    ]  # the year: 812,000 of 2,000,000 (40%)
    for _ in range(3):
        assert (await monitor(delivery, clock).round()).raised == []  # a restart each time
    assert (stored(clickhouse, "alerts_opened"), stored(clickhouse, "alert_occurrences")) == (4, 4)
    write_events(clickhouse, [charge("2026-11-21T10:40", "188000", dept="it")])
    again = await monitor(delivery, clock).round()
    assert keys(again.raised) == [  # welfare is still at 81%
        "budget_threshold|seoul|*|2026-11|100",
        "budget_threshold|seoul|*|2026|50",  # 1,000,000 of 2,000,000
    ]
    listed = list_alerts(clickhouse, AlertFilter("seoul"), 0, 100, None)
    welfare = next(s.alert for s in listed if s.alert.dedup_key.endswith("welfare|2026-11|80"))
    assert welfare.explanation == (
        "Department welfare (seoul) has spent 812,000 KRW of its 1,000,000 KRW budget for "
        "November 2026 (81%), past its 80% threshold."
    )
    assert welfare.attributes["explanation_ko"] == (
        "seoul 기관 welfare 부서의 2026년 11월 사용액이 예산 1,000,000원 중 812,000원(81%)으로 "
        "80% 기준을 넘었습니다."
    )
    assert (welfare.alert_type, welfare.severity, welfare.department_id, welfare.user_id) == (
        "budget_threshold",
        alert_pb2.SEVERITY_MEDIUM,
        "welfare",
        "",
    )
    assert welfare.attributes["spent_krw"] == "812000.000000"
    assert welfare.attributes["period_kind"] == "month"
    assert welfare.occurrence_count == 1
    organisation = next(s.alert for s in listed if s.alert.dedup_key.endswith("*|2026-11|100"))
    assert organisation.severity == alert_pb2.SEVERITY_HIGH
    assert organisation.department_id == ""


async def test_an_alert_is_produced_once_a_process_and_opened_once_whatever_is_produced(
    clickhouse: Client, delivery: Delivery
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", "600000")])
    clock = Clock("2026-11-21T10:30")
    job = BudgetMonitor(delivery.storage, delivery.publisher, policy, 60.0, clock)
    first = await job.round()
    assert keys(first.raised) == [
        "budget_threshold|seoul|*|2026-11|50",
        "budget_threshold|seoul|welfare|2026-11|50",
    ]
    # Produced and acknowledged, not stored yet: the same process does not produce them again.
    assert (await job.round()).raised == []
    # A restart before the sink stored them produces them again; the sink opens each once.
    again = await BudgetMonitor(delivery.storage, delivery.publisher, policy, 60.0, clock).round()
    assert keys(again.raised) == keys(first.raised)
    await delivery.drain()
    assert sorted(delivery.alert_keys) == sorted(keys(first.raised) * 2)
    assert (stored(clickhouse, "alerts_opened"), stored(clickhouse, "alert_occurrences")) == (2, 2)
    assert [a.alert.occurrence_count for a in list_alerts(clickhouse, AlertFilter("seoul"), 0, 10,
                                                          None)] == [1, 1]  # fmt: skip
    assert (await monitor(delivery, clock).round()).raised == []  # stored: never again


async def test_a_new_month_raises_again_and_the_year_counts_both(
    clickhouse: Client, delivery: Delivery
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", "812000")])
    clock = Clock("2026-11-21T10:30")
    await monitor(delivery, clock).round()
    write_events(clickhouse, [charge("2026-12-03T10:00", "600000")])
    clock.now = kst("2026-12-10T09:00")
    december = await monitor(delivery, clock).round()
    thresholds = [a for a in december.raised if a.alert_type == "budget_threshold"]
    assert keys(thresholds) == [
        "budget_threshold|seoul|*|2026-12|50",
        "budget_threshold|seoul|*|2026|50",  # 1,412,000 of 2,000,000
        "budget_threshold|seoul|welfare|2026-12|50",
    ]
    yearly = next(a for a in thresholds if a.dedup_key.endswith("|2026|50"))
    assert yearly.explanation == (
        "Organisation seoul has spent 1,412,000 KRW of its 2,000,000 KRW budget for fiscal year "
        "2026 (70%), past its 50% threshold."
    )
    assert yearly.attributes["period_kind"] == "fiscal_year"


async def test_a_period_just_ended_is_checked_while_it_settles(
    clickhouse: Client, delivery: Delivery
) -> None:
    write_events(clickhouse, [charge("2026-11-30T23:50", "500000")])  # arrived late
    clock = Clock("2026-12-01T00:40")
    assert "budget_threshold|seoul|*|2026-11|50" in keys(
        (await monitor(delivery, clock).round()).raised
    )
    write_events(clickhouse, [charge("2026-11-30T23:55", "300000")])  # re-rated much later
    clock.now = kst("2026-12-02T00:40")
    assert (await monitor(delivery, clock).round()).raised == []  # November has settled


async def test_a_projected_overrun_is_raised_once_from_its_threshold(
    clickhouse: Client, delivery: Delivery
) -> None:
    november(clickhouse)  # 425,000 spent by the 21st; 525,000 projected
    budgets = {"monthly_krw": "500000"}
    clock = Clock("2026-11-21T00:00")
    strict = policy(budgets=budgets, detectors={"budget_forecast": {"min_overrun_percent": 6}})
    assert "budget_forecast" not in {
        a.alert_type for a in (await monitor(delivery, clock, strict).round()).raised
    }  # 25,000 is 5% of the budget
    usual = policy(budgets=budgets, detectors={"budget_forecast": {"severity": "high"}})
    raised = (await monitor(delivery, clock, usual).round()).raised
    [forecast] = [a for a in raised if a.alert_type == "budget_forecast"]
    assert forecast.dedup_key == "budget_forecast|seoul|*|2026-11"
    assert forecast.severity == alert_pb2.SEVERITY_HIGH
    assert forecast.explanation == (
        "Organisation seoul is projected to spend 525,000 KRW in November 2026, 25,000 KRW (5%) "
        "over its 500,000 KRW budget, which runs out around 2026-11-28: metered use at 10,000 "
        "KRW a day (the last 7 days). Spent so far: 425,000 KRW (85%)."
    )
    assert forecast.attributes["projected_overrun_krw"] == "25000.000000"
    assert forecast.attributes["exhaustion_date"] == "2026-11-28"
    clock.now = kst("2026-11-25T00:00")
    assert (await monitor(delivery, clock, usual).round()).raised == []


async def test_no_forecast_alert_once_the_budget_is_spent(
    clickhouse: Client, delivery: Delivery
) -> None:
    november(clickhouse)
    budgets = {"monthly_krw": "420000"}  # 425,000 spent
    raised = (
        await monitor(delivery, Clock("2026-11-21T00:00"), policy(budgets=budgets)).round()
    ).raised
    assert "budget_threshold|seoul|*|2026-11|100" in keys(raised)
    assert all(a.alert_type == "budget_threshold" for a in raised)


async def test_budget_alerts_can_be_turned_off(clickhouse: Client, delivery: Delivery) -> None:
    november(clickhouse)
    quiet = policy(
        budgets={"monthly_krw": "500000"},
        detectors={"budget_threshold": {"enabled": False}, "budget_forecast": {"enabled": False}},
    )
    result = await monitor(delivery, Clock("2026-11-21T00:00"), quiet).round()
    assert result.raised == []
    assert [s.percent for s in result.statuses] == [85]


async def test_the_policy_file_is_reloaded_and_a_bad_one_keeps_the_last_good(
    clickhouse: Client, delivery: Delivery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policies.yaml"

    def publish(monthly: str) -> None:
        document = {
            "version": monthly,
            "organizations": {"seoul": {"budgets": {"monthly_krw": monthly}}},
        }
        path.write_text(yaml.safe_dump(document))

    publish("1000000")
    job = BudgetMonitor(
        delivery.storage,
        delivery.publisher,
        PolicySource(path).current,
        60.0,
        Clock("2026-11-21T10:30"),
    )
    write_events(clickhouse, [charge("2026-11-02T10:00", "600000")])
    assert keys((await job.round()).raised) == ["budget_threshold|seoul|*|2026-11|50"]
    publish("700000")  # 600,000 is now 85%
    assert keys((await job.round()).raised) == ["budget_threshold|seoul|*|2026-11|80"]
    path.write_text('version: "3"\norganizations: {seoul: {budgets: {monthly_krw: 1.5}}}\n')
    with caplog.at_level(logging.ERROR, logger="civicmeter.policy"):
        result = await job.round()
    assert [s.budget.amount for s in result.statuses] == [700000]  # the last good version
    assert f"{path}:2: organizations.seoul.budgets.monthly_krw: must be" in caplog.text


async def test_the_job_runs_until_stopped_and_survives_a_failed_round(
    clickhouse: Client, delivery: Delivery, caplog: pytest.LogCaptureFixture
) -> None:
    write_events(clickhouse, [charge("2026-11-02T10:00", "600000")])
    calls = 0

    def flaky() -> PolicySet:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the policy volume is not mounted yet")
        return policy()

    job = BudgetMonitor(
        delivery.storage, delivery.publisher, flaky, 0.05, Clock("2026-11-21T10:30")
    )
    stop = asyncio.Event()
    task = asyncio.create_task(job.run(stop))
    deadline = time.monotonic() + 30
    while stored(clickhouse, "alerts_opened") < 2 and time.monotonic() < deadline:
        await delivery.drain()  # the sink's part
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert stored(clickhouse, "alerts_opened") == 2  # 50% of the organisation's and welfare's
    assert "budget round failed" in caplog.text and "not mounted yet" in caplog.text


async def test_the_billing_service_runs_the_budget_monitor(delivery: Delivery) -> None:
    settings = BillingSettings(clickhouse=ClickHouseSettings(), policy_file=SHIPPED)
    telemetry = Telemetry(trace.get_tracer("test"), MeterProvider().get_meter("test"))
    found = jobs(settings, delivery.storage, delivery.publisher, telemetry)
    assert [type(job) for job in found if isinstance(job, BudgetMonitor)] == [BudgetMonitor]
