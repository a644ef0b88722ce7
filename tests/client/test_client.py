"""The Python client against a real server with API keys, on the embedded ClickHouse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest
from clickhouse_connect.driver.client import Client

import civicmeter.client
from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2_grpc
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.client import CivicmeterClient, CostLine
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.alert_service import AlertService
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.alert_writer import write_alerts
from civicmeter.sink.event_writer import write_events
from tests.core.test_alert_store import alert
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated

TOKEN = "cmk_client_test_token"


@pytest.fixture
async def target(clickhouse: Client) -> AsyncIterator[str]:
    events = [event(department_id=f"dept-{i % 3}", usage=pb.Usage(input_tokens=1000 * (i + 1)))
              for i in range(7)] + [event(organization_id="busan")]  # fmt: skip
    write_events(clickhouse, rated(*events))
    write_alerts(
        clickhouse, [alert(f"k{i}", f"e{i}", i) for i in range(5)], time.time_ns() // 10**6
    )
    keys = parse_api_keys(
        {
            "keys": [
                {
                    "id": "seoul-admin",
                    "organization_id": "seoul",
                    "role": "admin",
                    "sha256": hash_token(TOKEN),
                }
            ]
        }
    )
    storage = Storage(clickhouse)
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, None)])
    query_grpc.add_QueryServiceServicer_to_server(QueryService(storage), server)
    alert_service_pb2_grpc.add_AlertServiceServicer_to_server(
        AlertService(storage, poll_seconds=0.05), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def test_the_client_exports_exactly_its_public_names() -> None:
    assert sorted(civicmeter.client.__all__) == [
        "BudgetForecast",
        "BudgetStatus",
        "BudgetThreshold",
        "CivicmeterClient",
        "CostBreakdown",
        "CostLine",
        "CostPeriod",
        "CostSummary",
        "FOCUS_COLUMNS",
        "Seat",
        "SeatSummary",
        "SeatSummaryLine",
        "UsageLine",
        "UsageReport",
        "focus_row",
    ]


async def test_a_breakdown_gathers_every_page_as_decimal(target: str) -> None:
    async with CivicmeterClient(target, TOKEN) as api:
        paged = await api.cost_breakdown(
            NOW - timedelta(days=1), NOW + timedelta(days=1), "department", page_size=1
        )
        whole = await api.cost_breakdown(
            NOW - timedelta(days=1), NOW + timedelta(days=1), "department"
        )
    assert paged == whole
    assert [line.key for line in whole.lines] == ["dept-0", "dept-1", "dept-2"]
    assert whole.total_krw == sum((line.cost_krw for line in whole.lines), Decimal(0))
    assert all(
        isinstance(line, CostLine) and isinstance(line.cost_krw, Decimal) for line in whole.lines
    )
    assert sum(line.event_count for line in whole.lines) == 7  # busan's event is not seoul's


async def test_alerts_acknowledge_and_watch(target: str) -> None:
    async with CivicmeterClient(target, TOKEN) as api:
        listed = [a.dedup_key async for a in api.alerts(page_size=2)]
        assert sorted(listed) == [f"k{i}" for i in range(5)]
        done = await api.acknowledge("seoul", "k3", "auditor-7", resolve=True)
        assert done.state == alert_pb2.ALERT_STATE_RESOLVED
        resolved = [a.dedup_key async for a in api.alerts(state="resolved")]
        assert resolved == ["k3"]
        watched = api.watch_alerts(replay_seconds=600)
        first, cursor = await asyncio.wait_for(anext(watched), 5)
        assert first.dedup_key in listed and cursor
        await watched.aclose()


async def test_a_wrong_token_is_unauthenticated(target: str) -> None:
    async with CivicmeterClient(target, "cmk_wrong") as api:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await api.cost_breakdown(NOW - timedelta(days=1), NOW, "service")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_usage_summary_and_focus_export_agree_in_decimal(target: str) -> None:
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=1)
    async with CivicmeterClient(target, TOKEN) as api:
        paged = await api.usage(
            start, end, group_by=["department", "model"], granularity="hour", page_size=1
        )
        whole = await api.usage(start, end, group_by=["department", "model"], granularity="hour")
        only = await api.usage(
            start, end, group_by=["department"], filters={"department": ["dept-1"]}
        )
        summary = await api.cost_summary(start, end, granularity="day")
        rows = [row async for row in api.export_usage(start, end, include_users=True)]
    assert paged == whole
    assert {tuple(line.group) for line in whole.lines} == {("department", "model")}
    assert sum(line.event_count for line in whole.lines) == whole.event_count == 7
    assert whole.total_krw == sum((line.cost_krw for line in whole.lines), Decimal(0))
    assert sum(line.quantities["input_tokens"] for line in whole.lines) == 1000 * sum(range(1, 8))
    assert [line.group["department"] for line in only.lines] == ["dept-1"]
    assert summary.total.total_krw == whole.total_krw == summary.total.usage_krw
    assert sum(row["BilledCost"] for row in rows) == whole.total_krw  # type: ignore[misc]
    assert {row["BillingAccountId"] for row in rows} == {"seoul"}
    assert all(isinstance(row["BilledCost"], Decimal) for row in rows)
