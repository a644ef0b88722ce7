"""Tenant isolation and roles over a real gRPC channel, with the access interceptor, on the
embedded ClickHouse engine: for every RPC and every ordered pair of tenants, A's key asking
for B's data gets PERMISSION_DENIED or only A's rows."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_service_pb2, alert_service_pb2_grpc
from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.decision.v1 import decision_service_pb2 as decision_pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.seats import Seat, sync_seats
from civicmeter.policy.organization import parse_policies
from civicmeter.query.access import METHOD_ROLES, AccessInterceptor, AuditLog
from civicmeter.query.alert_service import AlertService
from civicmeter.query.budget_service import BudgetService
from civicmeter.query.decision_service import DecisionService
from civicmeter.query.seat_service import SeatService
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.alert_writer import write_alerts
from civicmeter.sink.event_writer import write_events
from tests.core.test_alert_store import alert
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated

TENANTS = ("seoul", "busan", "jeju")


def token(tenant: str, role: str) -> str:
    return f"cmk_test_{tenant}_{role}"


@dataclass
class Api:
    query: query_grpc.QueryServiceStub
    alerts: alert_service_pb2_grpc.AlertServiceStub
    audit: AuditLog
    seats: seat_grpc.SeatServiceStub
    budgets: budget_grpc.BudgetServiceStub
    decisions: decision_grpc.DecisionServiceStub


@pytest.fixture
async def api(clickhouse: Client) -> AsyncIterator[Api]:
    for tenant in TENANTS:
        write_events(
            clickhouse, rated(*[event(organization_id=tenant) for _ in range(EVENTS_OF[tenant])])
        )
        write_alerts(
            clickhouse, [alert(f"{tenant}-k", f"{tenant}-e", org=tenant)], time.time_ns() // 10**6
        )
    sync_seats(clickhouse, [  # tenants hold 1, 2, 3 seats, which tells their summaries apart
        Seat(t, f"seat-{n}", "welfare", f"u_{t}_{n}", "openai", "chatgpt", "team",
             NOW.date().replace(day=1), None)
        for t in TENANTS for n in range(EVENTS_OF[t])])  # fmt: skip
    roles = ("finance-reader", "auditor", "security", "gateway")
    keys = parse_api_keys({"keys": [
        {"id": f"{t}-{r}", "organization_id": t, "role": r, "sha256": hash_token(token(t, r))}
        for t, r in itertools.product(TENANTS, roles)]})  # fmt: skip
    storage = Storage(clickhouse)
    audit = AuditLog(storage)
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, audit)])
    query_grpc.add_QueryServiceServicer_to_server(QueryService(storage), server)
    alert_service_pb2_grpc.add_AlertServiceServicer_to_server(
        AlertService(storage, poll_seconds=0.05), server
    )
    seat_grpc.add_SeatServiceServicer_to_server(SeatService(storage), server)
    budgets = parse_policies({"version": "t", "defaults": {"budgets": {"monthly_krw": "1000"}}})
    budget_grpc.add_BudgetServiceServicer_to_server(BudgetService(storage, lambda: budgets), server)
    decision_grpc.add_DecisionServiceServicer_to_server(
        DecisionService(storage, lambda: budgets), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Api(
            query_grpc.QueryServiceStub(channel),
            alert_service_pb2_grpc.AlertServiceStub(channel),
            audit,
            seat_grpc.SeatServiceStub(channel),
            budgets=budget_grpc.BudgetServiceStub(channel),
            decisions=decision_grpc.DecisionServiceStub(channel),
        )
    await server.stop(None)


def bearer(value: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {value}"),)


def cost_request(org: str) -> query_pb.GetCostBreakdownRequest:
    request = query_pb.GetCostBreakdownRequest(
        group_by=query_pb.COST_DIMENSION_ORGANIZATION, organization_id=org
    )
    request.start_time.FromDatetime(NOW - timedelta(days=1))
    request.end_time.FromDatetime(NOW + timedelta(days=1))
    return request


Probe = Callable[[Api, str, str], Awaitable[list[str]]]
PROBES: dict[str, Probe] = {}
EVENTS_OF = {tenant: n for n, tenant in enumerate(TENANTS, start=1)}  # tells tenants' sums apart


def probe(method: str) -> Callable[[Probe], Probe]:
    """Registers how to ask `method` for a target organisation's data with the caller's key;
    the probe returns the organisation of every row it got back."""

    def register(fn: Probe) -> Probe:
        PROBES[method] = fn
        return fn

    return register


@probe("/civicmeter.query.v1.QueryService/GetCostBreakdown")
async def _cost_breakdown(api: Api, caller: str, target: str) -> list[str]:
    costs = await api.query.GetCostBreakdown(
        cost_request(target), metadata=bearer(token(caller, "finance-reader"))
    )
    return [line.key for line in costs.lines]


@probe("/civicmeter.query.v1.QueryService/QueryUsage")
async def _query_usage(api: Api, caller: str, target: str) -> list[str]:
    request = query_pb.QueryUsageRequest(
        organization_id=target, group_by=[query_pb.DIMENSION_ORGANIZATION]
    )
    request.start_time.FromDatetime(NOW - timedelta(days=1))
    request.end_time.FromDatetime(NOW + timedelta(days=1))
    answer = await api.query.QueryUsage(request, metadata=bearer(token(caller, "auditor")))
    return [line.group_values[0] for line in answer.lines]


@probe("/civicmeter.query.v1.QueryService/GetCostSummary")
async def _cost_summary(api: Api, caller: str, target: str) -> list[str]:
    request = query_pb.GetCostSummaryRequest(organization_id=target)
    request.start_time.FromDatetime(NOW - timedelta(days=40))
    request.end_time.FromDatetime(NOW + timedelta(days=40))
    answer = await api.query.GetCostSummary(
        request, metadata=bearer(token(caller, "finance-reader"))
    )
    # The summary names no organisation: whose it is shows in its event count.
    owners = {n: tenant for tenant, n in EVENTS_OF.items()}
    return [owners.get(p.event_count, f"unknown:{p.event_count}") for p in answer.periods]


@probe("/civicmeter.query.v1.QueryService/ExportUsage")
async def _export_usage(api: Api, caller: str, target: str) -> list[str]:
    request = query_pb.ExportUsageRequest(organization_id=target, include_users=True)
    request.start_time.FromDatetime(NOW - timedelta(days=1))
    request.end_time.FromDatetime(NOW + timedelta(days=1))
    seen: list[str] = []
    async for chunk in api.query.ExportUsage(request, metadata=bearer(token(caller, "auditor"))):
        seen += [line.billing_account_id for line in chunk.lines]
    return seen


@probe("/civicmeter.alert.v1.AlertService/ListAlerts")
async def _list_alerts(api: Api, caller: str, target: str) -> list[str]:
    listed = await api.alerts.ListAlerts(
        alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id=target)
        ),
        metadata=bearer(token(caller, "auditor")),
    )
    return [a.organization_id for a in listed.alerts]


@probe("/civicmeter.alert.v1.AlertService/WatchAlerts")
async def _watch_alerts(api: Api, caller: str, target: str) -> list[str]:
    watch = api.alerts.WatchAlerts(
        alert_service_pb2.WatchAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id=target), replay_seconds=3600
        ),
        metadata=bearer(token(caller, "auditor")),
    )
    first = await asyncio.wait_for(watch.read(), 5)
    watch.cancel()
    return [first.alert.organization_id]


@probe("/civicmeter.alert.v1.AlertService/AcknowledgeAlert")
async def _acknowledge_alert(api: Api, caller: str, target: str) -> list[str]:
    acknowledged = await api.alerts.AcknowledgeAlert(
        alert_service_pb2.AcknowledgeAlertRequest(
            organization_id=target, dedup_key=f"{target}-k", actor="t"
        ),
        metadata=bearer(token(caller, "security")),
    )
    return [acknowledged.alert.organization_id]


@probe("/civicmeter.budget.v1.BudgetService/ListBudgetStatuses")
async def _budget_statuses(api: Api, caller: str, target: str) -> list[str]:
    request = budget_pb.ListBudgetStatusesRequest(organization_id=target)
    request.as_of_time.FromDatetime(NOW)
    listed = await api.budgets.ListBudgetStatuses(
        request, metadata=bearer(token(caller, "finance-reader"))
    )
    # Whose spend it is shows in its amount: the tenants have 1, 2 and 3 like events.
    per_event = Decimal(rated(event())[0].cost_krw)
    owners = {per_event * n: tenant for tenant, n in EVENTS_OF.items()}
    spenders = [owners.get(from_money(s.spent_amount), "unknown") for s in listed.budget_statuses]
    return [s.organization_id for s in listed.budget_statuses] + spenders


@probe("/civicmeter.seat.v1.SeatService/ListSeats")
async def _list_seats(api: Api, caller: str, target: str) -> list[str]:
    request = seat_pb.ListSeatsRequest(organization_id=target)
    request.as_of_time.FromDatetime(NOW)
    listed = await api.seats.ListSeats(request, metadata=bearer(token(caller, "finance-reader")))
    return [seat.organization_id for seat in listed.seats]


@probe("/civicmeter.seat.v1.SeatService/GetSeatSummary")
async def _seat_summary(api: Api, caller: str, target: str) -> list[str]:
    request = seat_pb.GetSeatSummaryRequest(
        organization_id=target, group_by=seat_pb.SEAT_DIMENSION_SERVICE
    )
    request.month.year, request.month.month = NOW.year, NOW.month
    summary = await api.seats.GetSeatSummary(request, metadata=bearer(token(caller, "auditor")))
    # The summary names no organisation: whose it is shows in its number of seats.
    owners = {n: tenant for tenant, n in EVENTS_OF.items()}
    return [owners.get(summary.total.seats, f"unknown:{summary.total.seats}")]


@probe("/civicmeter.decision.v1.DecisionService/Decide")
async def _decide(api: Api, caller: str, target: str) -> list[str]:
    request = decision_pb.DecideRequest(organization_id=target, provider="deepseek")
    answer = await api.decisions.Decide(request, metadata=bearer(token(caller, "gateway")))
    return [answer.organization_id]


@probe("/civicmeter.decision.v1.DecisionService/WatchPolicy")
async def _watch_policy(api: Api, caller: str, target: str) -> list[str]:
    stream = api.decisions.WatchPolicy(
        decision_pb.WatchPolicyRequest(organization_id=target),
        metadata=bearer(token(caller, "gateway")),
    )
    first = await stream.read()
    stream.cancel()
    return [first.policy.organization_id]


async def test_every_rpc_for_every_ordered_pair_of_tenants_stays_in_its_tenant(api: Api) -> None:
    # Every method the API serves (each has a role entry) is probed: a new RPC without a probe
    # fails here.
    assert set(PROBES) == set(METHOD_ROLES)
    cross_rows = 0
    for method, ask in PROBES.items():
        for caller, target in itertools.product(TENANTS, TENANTS):
            try:
                outcome: list[str] | grpc.StatusCode = await ask(api, caller, target)
            except grpc.aio.AioRpcError as exc:
                outcome = exc.code()
            if caller == target:
                assert isinstance(outcome, list) and outcome, (method, caller, outcome)
                assert set(outcome) == {caller}, (method, caller, outcome)
            else:
                assert outcome == grpc.StatusCode.PERMISSION_DENIED, (method, caller, target)
            if isinstance(outcome, list):
                cross_rows += sum(org != caller for org in outcome)
    assert cross_rows == 0
    print(f"{len(PROBES)} RPCs x {len(TENANTS)}^2 pairs, {cross_rows} cross-tenant rows")


async def test_each_rpc_refuses_a_foreign_organisation_on_its_own(api: Api) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    calls = [
        api.query.GetCostBreakdown(cost_request("busan"),
                                   metadata=bearer(token("seoul", "finance-reader"))),
        api.alerts.ListAlerts(alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id="busan")),
            metadata=bearer(token("seoul", "auditor"))),
        api.alerts.AcknowledgeAlert(alert_service_pb2.AcknowledgeAlertRequest(
            organization_id="busan", dedup_key="busan-k", actor="x"),
            metadata=bearer(token("seoul", "security"))),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == denied
    watch = api.alerts.WatchAlerts(
        alert_service_pb2.WatchAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id="busan")
        ),
        metadata=bearer(token("seoul", "auditor")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await watch.read()
    assert info.value.code() == denied


async def test_no_organisation_named_means_the_keys_own(api: Api) -> None:
    costs = await api.query.GetCostBreakdown(
        cost_request(""), metadata=bearer(token("jeju", "finance-reader"))
    )
    assert [line.key for line in costs.lines] == ["jeju"]


async def test_missing_or_wrong_credentials_and_roles(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await api.query.GetCostBreakdown(cost_request("seoul"))
    assert none.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await api.query.GetCostBreakdown(cost_request("seoul"), metadata=bearer("cmk_guess"))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as role:
        await api.alerts.AcknowledgeAlert(
            alert_service_pb2.AcknowledgeAlertRequest(
                organization_id="seoul", dedup_key="seoul-k", actor="x"
            ),
            metadata=bearer(token("seoul", "finance-reader")),
        )
    assert role.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_call_is_in_the_audit_log(api: Api, clickhouse: Client) -> None:
    await api.query.GetCostBreakdown(
        cost_request("seoul"), metadata=bearer(token("seoul", "finance-reader"))
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await api.query.GetCostBreakdown(
            cost_request("busan"), metadata=bearer(token("seoul", "finance-reader"))
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await api.query.GetCostBreakdown(cost_request("seoul"))
    await api.audit.flush()
    rows = clickhouse.query(
        "SELECT key_id, method, organization_id, status FROM audit_log ORDER BY call_time"
    ).result_rows
    method = "/civicmeter.query.v1.QueryService/GetCostBreakdown"
    # Sorted: calls a millisecond apart share a call_time.
    assert sorted(tuple(r) for r in rows) == [
        ("seoul-finance-reader", method, "busan", "PERMISSION_DENIED"),  # the one it targeted
        ("seoul-finance-reader", method, "seoul", "OK"),
        ("unauthenticated", method, "seoul", "UNAUTHENTICATED"),  # the one it asked for
    ]
