"""The Python client's budget statuses against a real server with API keys, on the embedded
ClickHouse engine: Decimal money, dates, the period filter and every page gathered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.client import BudgetForecast, BudgetThreshold, CivicmeterClient
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.policy.organization import parse_policies
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.budget_service import BudgetService
from civicmeter.sink.event_writer import write_events
from tests.core.test_budgets import charge, kst

TOKEN = "cmk_client_budget_token"
NOW = kst("2026-11-21T00:00")


@pytest.fixture
async def target(clickhouse: Client) -> AsyncIterator[str]:
    write_events(
        clickhouse,
        [charge("2026-11-01T00:00", "29000", seat=True) for _ in range(10)]
        + [charge(f"2026-11-{d}T10:00", "10000.25", dept="it") for d in range(14, 21)],
    )
    policies = parse_policies(
        {
            "version": "c-1",
            "organizations": {
                "seoul": {
                    "budgets": {
                        "monthly_krw": "400000",
                        "yearly_krw": "4000000",
                        "departments": {"it": {"monthly_krw": "60000"}},
                    }
                }
            },
        }
    )
    key = {"id": "seoul-finance", "organization_id": "seoul", "role": "finance-reader"}
    keys = parse_api_keys({"keys": [{**key, "sha256": hash_token(TOKEN)}]})
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, None)])
    budget_grpc.add_BudgetServiceServicer_to_server(
        BudgetService(Storage(clickhouse), lambda: policies, lambda: NOW), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_budget_statuses_come_as_decimal_every_page_gathered(target: str) -> None:
    async with CivicmeterClient(target, TOKEN) as api:
        statuses = await api.budget_statuses(page_size=1)
        months = await api.budget_statuses(period="month", as_of=NOW)
        years = await api.budget_statuses(period="fiscal_year")
    assert [(s.period, s.department_id) for s in statuses] == [
        ("month", ""),
        ("month", "it"),
        ("fiscal_year", ""),
    ]
    assert months == statuses[:2]
    assert years == statuses[2:]
    month, it, _ = statuses
    assert (month.budget_krw, month.spent_krw) == (Decimal(400000), Decimal("360001.75"))
    assert month.remaining_krw == Decimal("39998.25")
    assert month.percent_spent == Decimal("90.00")
    assert month.period_start == kst("2026-11-01T00:00")
    assert month.spent_through == NOW
    assert month.thresholds == (
        BudgetThreshold(50, "low", Decimal(200000), True),
        BudgetThreshold(80, "medium", Decimal(320000), True),
        BudgetThreshold(100, "high", Decimal(400000), False),
    )
    # 70,001.75 over the last 7 days: 10,000.25 a day for the 10 days left.
    assert month.forecast == BudgetForecast(
        projected_spend_krw=Decimal("460004.25"),
        projected_overrun_krw=Decimal("60004.25"),
        exhaustion_date=date(2026, 11, 24),
        daily_run_rate_krw=Decimal("10000.25"),
        run_rate_days=7,
        upcoming_seat_charges_krw=Decimal(0),
    )
    assert it.forecast is not None and it.forecast.exhaustion_date is None  # already spent
    assert it.remaining_krw == Decimal("-10001.75")
