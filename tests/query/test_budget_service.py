"""BudgetService over a real gRPC channel with the access interceptor, on the embedded
ClickHouse engine: the figures, the period filter, pages, bad input and tenants."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from clickhouse_connect.driver.client import Client
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.money import from_money
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.policy.organization import parse_policies
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.budget_service import BudgetService
from civicmeter.sink.event_writer import write_events
from tests.core.test_budgets import charge, kst

NOW = kst("2026-11-21T12:00")
POLICIES = parse_policies(
    {
        "version": "b-1",
        "organizations": {
            "seoul": {
                "budgets": {
                    "monthly_krw": "1000000",
                    "yearly_krw": "10000000",
                    "departments": {"welfare": "500000"},
                }
            },
            "busan": {"budgets": {"monthly_krw": "2000000"}},
        },
    },
    "budgets.yaml",
)
KEYS = {  # token -> (organisation, role)
    "cmk_seoul_finance": ("seoul", "finance-reader"),
    "cmk_busan_auditor": ("busan", "auditor"),
    "cmk_operator": ("*", "admin"),
    "cmk_seoul_security": ("seoul", "security"),
}


@dataclass
class Api:
    stub: budget_grpc.BudgetServiceStub

    async def list(
        self, token: str, organization_id: str = "", **fields: object
    ) -> budget_pb.ListBudgetStatusesResponse:
        request = budget_pb.ListBudgetStatusesRequest(organization_id=organization_id)
        as_of = fields.pop("as_of", NOW)
        if as_of is not None:
            assert isinstance(as_of, datetime)
            request.as_of_time.FromDatetime(as_of)
        for name, value in fields.items():
            setattr(request, name, value)
        response: budget_pb.ListBudgetStatusesResponse = await self.stub.ListBudgetStatuses(
            request, metadata=(("authorization", f"Bearer {token}"),)
        )
        return response


@pytest.fixture
async def api(clickhouse: Client) -> AsyncIterator[Api]:
    write_events(
        clickhouse,
        [
            charge("2026-11-01T00:00", "290000", seat=True),
            charge("2026-11-14T10:00", "70000", dept="it"),
            charge("2026-11-21T09:15", "0.5"),
            charge("2026-03-02T10:00", "1000000", dept="it"),
            charge("2026-11-03T10:00", "1500000", org="busan"),
        ],
    )
    keys = parse_api_keys({"keys": [
        {"id": token, "organization_id": org, "role": role, "sha256": hash_token(token)}
        for token, (org, role) in KEYS.items()]})  # fmt: skip
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, None)])
    service = BudgetService(Storage(clickhouse), lambda: POLICIES, lambda: NOW)
    budget_grpc.add_BudgetServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Api(budget_grpc.BudgetServiceStub(channel))
    await server.stop(None)


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def test_the_statuses_of_an_organisation(api: Api) -> None:
    response = await api.list("cmk_seoul_finance", "seoul")
    assert at(response.as_of_time) == NOW
    statuses = response.budget_statuses
    assert [(s.period, s.department_id) for s in statuses] == [
        (budget_pb.BUDGET_PERIOD_MONTH, ""),
        (budget_pb.BUDGET_PERIOD_MONTH, "welfare"),
        (budget_pb.BUDGET_PERIOD_FISCAL_YEAR, ""),
    ]
    month, welfare, year = statuses
    assert month.organization_id == "seoul"
    assert month.budget_amount.currency_code == "KRW"
    assert from_money(month.budget_amount) == 1000000
    assert from_money(month.spent_amount) == Decimal("360000.5")
    assert from_money(month.remaining_amount) == Decimal("639999.5")
    assert month.percent_spent.value == "36.00"
    assert at(month.period_start_time) == kst("2026-11-01T00:00")
    assert at(month.period_end_time) == kst("2026-12-01T00:00")
    assert at(month.spent_through_time) == NOW  # the end of NOW's hour: NOW itself
    assert [(t.percent, t.crossed, from_money(t.amount)) for t in month.thresholds] == [
        (50, False, Decimal(500000)),
        (80, False, Decimal(800000)),
        (100, False, Decimal(1000000)),
    ]
    assert [t.severity for t in month.thresholds] == [
        alert_pb2.SEVERITY_LOW,
        alert_pb2.SEVERITY_MEDIUM,
        alert_pb2.SEVERITY_HIGH,
    ]
    forecast = month.forecast
    # IT's 70,000 on the 14th is the last week's metered use: 10,000 a day, 9.5 days left.
    assert (from_money(forecast.daily_run_rate), forecast.run_rate_days) == (Decimal(10000), 7)
    assert from_money(forecast.upcoming_seat_charges) == 0
    assert from_money(forecast.projected_spend) == Decimal("360000.5") + 95000
    assert from_money(forecast.projected_overrun) == 0
    assert not forecast.HasField("projected_exhaustion_date")
    assert from_money(welfare.spent_amount) == Decimal("290000.5")
    assert [t.crossed for t in welfare.thresholds] == [True, False, False]
    assert from_money(year.spent_amount) == Decimal("1360000.5")
    year_forecast = year.forecast
    # The rest of November, December's seats (as November's) and 31 days at the run-rate.
    assert from_money(year_forecast.upcoming_seat_charges) == 290000
    assert (
        from_money(year_forecast.projected_spend) == Decimal("1360000.5") + 95000 + 290000 + 310000
    )


async def test_the_period_filter_and_pages(api: Api) -> None:
    years = await api.list("cmk_seoul_finance", period=budget_pb.BUDGET_PERIOD_FISCAL_YEAR)
    assert [s.period for s in years.budget_statuses] == [budget_pb.BUDGET_PERIOD_FISCAL_YEAR]
    seen: list[tuple[int, str]] = []
    tokens = [""]
    while len(tokens) < 5:
        page = await api.list("cmk_seoul_finance", as_of=None, page_size=1, page_token=tokens[-1])
        assert at(page.as_of_time) == NOW  # the first page's moment holds for the next
        seen += [(s.period, s.department_id) for s in page.budget_statuses]
        if not page.next_page_token:
            break
        tokens.append(page.next_page_token)
    assert seen == [(1, ""), (1, "welfare"), (2, "")]
    assert len(tokens) == 3
    with pytest.raises(grpc.aio.AioRpcError) as foreign:  # a token of another question
        await api.list("cmk_seoul_finance", page_size=1, page_token=tokens[1], period=2)
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (foreign.value.details() or "")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"period": 9}, "period"),
        ({"as_of": NOW + timedelta(hours=1)}, "as_of_time"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
async def test_bad_requests_name_the_field(api: Api, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.list("cmk_seoul_finance", **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")


async def test_tenants_see_only_their_own_budgets(api: Api) -> None:
    own = await api.list("cmk_seoul_finance")
    assert {s.organization_id for s in own.budget_statuses} == {"seoul"}
    busan = await api.list("cmk_busan_auditor", "busan")
    assert [(s.organization_id, from_money(s.spent_amount)) for s in busan.budget_statuses] == [
        ("busan", Decimal(1500000))
    ]
    for token, target in itertools.product(("cmk_seoul_finance", "cmk_busan_auditor"), ("jeju",)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await api.list(token, target)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.list("cmk_seoul_finance", "busan")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    every = await api.list("cmk_operator")
    assert [s.organization_id for s in every.budget_statuses] == [
        "busan",
        "seoul",
        "seoul",
        "seoul",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as role:
        await api.list("cmk_seoul_security")
    assert role.value.code() == grpc.StatusCode.PERMISSION_DENIED
