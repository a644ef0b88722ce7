"""DecisionService over the real servers: gateway keys, decisions, the policy stream. Each test
runs against the query service and against the decision service's own process
(query.decision_server), which must answer alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import metrics

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as usage_pb
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings, QuerySettings
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.grpc_server import GrpcServer
from civicmeter.core.store.connection import Storage
from civicmeter.gateway import Guard
from civicmeter.policy.compiled import budget_from_message, load_compiled
from civicmeter.policy.decision import RequestFacts, decide
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from civicmeter.query.access import AuditLog
from civicmeter.query.decision_server import ThreadPoolServer, build_decision_server
from civicmeter.query.server import build_server
from civicmeter.sink.event_writer import write_events
from tests.factories import catalog, event
from tests.query.live_server import free_port

GATEWAY = "cmk_decision_gateway_seoul"
TWO_ORGS = "cmk_decision_gateway_two"
FINANCE = "cmk_decision_finance"
POLICY = {
    "version": "d-1",
    "defaults": {
        "sanctioned_services": ["chatgpt", "openai-api"],
        "working_hours": {"start": "00:00", "end": "24:00",
                          "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                          "holidays": None},
        "budgets": {"departments": {"digital-policy": {"monthly_krw": "5"}}},
    },
    "organizations": {"seoul": {}, "busan": {"sanctioned_services": ["chatgpt"]}},
}  # fmt: skip


@contextlib.asynccontextmanager
async def serving(
    clickhouse: Client,
    tmp_path: Path,
    port: int | None = None,
    kind: str = "query",
    audit: AuditLog | None = None,
    meter: metrics.Meter | None = None,
    storage: Storage | None = None,
    max_watchers: int | None = None,
) -> AsyncIterator[grpc.aio.Channel]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"id": "gw-seoul", "role": "gateway", "organization_ids": ["seoul"],
         "sha256": hash_token(GATEWAY)},
        {"id": "gw-two", "role": "gateway", "organization_ids": ["seoul", "busan"],
         "sha256": hash_token(TWO_ORGS)},
        {"id": "finance", "organization_id": "seoul", "role": "finance-reader",
         "sha256": hash_token(FINANCE)},
    ]}))  # fmt: skip
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump(POLICY))
    settings = QuerySettings(
        clickhouse=ClickHouseSettings(),
        grpc_port=port or free_port(),
        api_keys_file=keys,
        policy_file=policies,
        rate_per_key=0,
    )
    audit = audit or AuditLog(Storage(clickhouse))
    storage = storage or Storage(clickhouse)
    server: GrpcServer | ThreadPoolServer
    if kind == "decision":
        server = build_decision_server(settings, storage, audit, meter, max_watchers)
    else:
        server = build_server(settings, storage, audit)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        yield channel
    await server.stop(0)


@pytest.fixture(params=["query", "decision"])
async def channel(
    clickhouse: Client, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[grpc.aio.Channel]:
    async with serving(clickhouse, tmp_path, kind=request.param) as running:
        yield running


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def request(**fields: Any) -> pb.DecideRequest:
    base: dict[str, Any] = {
        "department_id": "welfare",
        "user_id": "u_1",
        "provider": "openai",
        "service": "chatgpt",
        "account_kind": pb.ACCOUNT_KIND_ORGANIZATIONAL,
    }
    return pb.DecideRequest(**{**base, **fields})


def spend(clickhouse: Client, department: str, count: int) -> None:
    """Rated events of this moment (each about 3.18 KRW) in the department."""
    now = datetime.now(UTC)
    events = [
        event(department_id=department, event_time=now - timedelta(minutes=1)) for _ in range(count)
    ]
    records = [RawRecord(encode_event_batch([e]), 0, i) for i, e in enumerate(events)]
    result = BatchProcessor(catalog(), "usage.raw").process(records, now)
    write_events(clickhouse, [usage_pb.RatedUsageEvent.FromString(v) for _, v in result.rated])


async def test_decide_applies_the_policy_of_the_keys_organisation(
    channel: grpc.aio.Channel,
) -> None:
    stub = decision_grpc.DecisionServiceStub(channel)
    allowed = await stub.Decide(request(), metadata=auth(GATEWAY))
    assert allowed.outcome == pb.OUTCOME_ALLOW
    assert allowed.policy_version == "d-1"
    banned = await stub.Decide(request(provider="deepseek"), metadata=auth(GATEWAY))
    assert banned.outcome == pb.OUTCOME_DENY
    assert list(banned.rule_ids) == ["banned_provider"]
    assert "deepseek" in banned.reason_en and banned.reason_ko
    redacted = await stub.Decide(
        request(pii_findings=[pb.FindingCount(type="kr_rrn", count=1)]), metadata=auth(GATEWAY)
    )
    assert redacted.outcome == pb.OUTCOME_REDACT
    assert list(redacted.redact_types) == ["kr_rrn"]
    blocked = await stub.Decide(
        request(document_markings=[pb.FindingCount(type="confidential", count=1)]),
        metadata=auth(GATEWAY),
    )
    assert (blocked.outcome, list(blocked.rule_ids)) == (pb.OUTCOME_DENY, ["document.confidential"])


async def test_a_spent_department_budget_is_denied(
    channel: grpc.aio.Channel, clickhouse: Client
) -> None:
    spend(clickhouse, "digital-policy", 2)
    stub = decision_grpc.DecisionServiceStub(channel)
    denied = await stub.Decide(request(department_id="digital-policy"), metadata=auth(GATEWAY))
    assert denied.outcome == pb.OUTCOME_DENY
    assert list(denied.rule_ids) == ["budget.department.month"]
    assert "KRW 5" in denied.reason_en
    other = await stub.Decide(request(department_id="welfare"), metadata=auth(GATEWAY))
    assert other.outcome == pb.OUTCOME_ALLOW


async def test_the_organisation_comes_from_the_key(channel: grpc.aio.Channel) -> None:
    stub = decision_grpc.DecisionServiceStub(channel)
    unsanctioned = request(service="openai-api")
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stub.Decide(request(organization_id="busan"), metadata=auth(GATEWAY))
    assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "organization_id" in (foreign.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as ambiguous:
        await stub.Decide(unsanctioned, metadata=auth(TWO_ORGS))
    assert ambiguous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unsanctioned.organization_id = "busan"
    busan = await stub.Decide(unsanctioned, metadata=auth(TWO_ORGS))
    assert list(busan.rule_ids) == ["unsanctioned_service"]
    unsanctioned.organization_id = "seoul"
    assert (await stub.Decide(unsanctioned, metadata=auth(TWO_ORGS))).outcome == pb.OUTCOME_ALLOW


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("cmk_wrong", grpc.StatusCode.UNAUTHENTICATED),
        (FINANCE, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_gateway_keys_may_ask(
    channel: grpc.aio.Channel, token: str | None, code: grpc.StatusCode
) -> None:
    stub = decision_grpc.DecisionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Decide(request(), metadata=auth(token) if token else None)
    assert refused.value.code() == code


async def test_watch_policy_hands_the_gateway_its_policy_and_budget_state(
    channel: grpc.aio.Channel, clickhouse: Client
) -> None:
    spend(clickhouse, "digital-policy", 2)
    stub = decision_grpc.DecisionServiceStub(channel)
    stream = stub.WatchPolicy(pb.WatchPolicyRequest(), metadata=auth(GATEWAY))
    first = await stream.read()
    second = await stream.read()
    stream.cancel()
    assert first.policy.organization_id == "seoul"
    assert first.policy.policy_version == "d-1"
    assert not second.HasField("policy")  # sent again only when the file changes
    assert second.HasField("budget_state")
    policy = load_compiled(first.policy).defaults
    state = budget_from_message(first.budget_state)
    assert state.department("digital-policy").month_krw > 5
    assert state.organization.month_krw == state.department("digital-policy").month_krw
    # The gateway decides locally as the service does.
    facts = RequestFacts(department="digital-policy", provider="openai", service="chatgpt")
    local = decide(policy, facts, {}, {}, state, datetime.now(UTC))
    remote = await stub.Decide(request(department_id="digital-policy"), metadata=auth(GATEWAY))
    assert local.rule_ids == tuple(remote.rule_ids) == ("budget.department.month",)
    assert local.reason_en == remote.reason_en
    # Other organisations' policies are not in the document.
    assert "busan" not in first.policy.policy_document


async def test_health_and_reflection_name_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="civicmeter.decision.v1.DecisionService")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_guard_follows_the_stream_and_decides_locally(
    clickhouse: Client, tmp_path: Path
) -> None:
    spend(clickhouse, "digital-policy", 2)
    port = free_port()
    async with serving(clickhouse, tmp_path, port):
        guard = Guard()
        watching = asyncio.create_task(guard.watch(f"127.0.0.1:{port}", GATEWAY))
        deadline = time.monotonic() + 20
        while guard.policy_version != "d-1" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert guard.policy_version == "d-1" and not guard.stale
    facts = RequestFacts(department="digital-policy", provider="openai", service="chatgpt")
    verdict = guard.check("회의록을 요약해줘", facts)
    assert (verdict.outcome, verdict.rule_ids) == ("DENY", ("budget.department.month",))
    assert (
        guard.check("회의록을 요약해줘", RequestFacts(provider="openai", service="chatgpt")).outcome
        == "ALLOW"
    )


@pytest.mark.parametrize("kind", ["query", "decision"])
async def test_each_decide_is_audited_with_the_organisation_it_was_decided_for(
    clickhouse: Client, tmp_path: Path, kind: str
) -> None:
    audit = AuditLog(Storage(clickhouse))
    async with serving(clickhouse, tmp_path, kind=kind, audit=audit) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        await stub.Decide(request(), metadata=auth(GATEWAY))  # the key's one organisation
        await stub.Decide(request(organization_id="busan"), metadata=auth(TWO_ORGS))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Decide(request(), metadata=auth(TWO_ORGS))  # which of its two?
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await stub.Decide(request(organization_id="daegu"), metadata=auth(TWO_ORGS))
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await audit.flush()
    rows = clickhouse.query(
        "SELECT key_id, organization_id, status FROM audit_log WHERE method LIKE '%/Decide'"
    ).result_rows
    assert sorted(tuple(row) for row in rows) == sorted([
        ("gw-seoul", "seoul", "OK"),
        ("gw-two", "busan", "OK"),
        ("gw-two", "", "INVALID_ARGUMENT"),
        ("gw-two", "daegu", "PERMISSION_DENIED"),  # the organisation it asked for
    ])  # fmt: skip
