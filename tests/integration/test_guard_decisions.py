"""From flagging to preventing, over the real services: a gateway with the SDK's Guard in front
of a stub AI provider on loopback. Its requests are denied for DeepSeek, redacted for a
resident registration number, blocked for a 대외비 document and denied once the department's
budget is spent; every decision is metered, visible in QueryUsage by decision, and the repeated
denials of one user raise an alert. Each service runs in its own process on the real broker and
embedded ClickHouse; the gateway authenticates with its gateway key to ingest and to the
decision service alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import aiohttp
import grpc
import pytest
import yaml
from aiohttp import web

from civicmeter.api.alert.v1 import alert_service_pb2 as alert_pb
from civicmeter.api.alert.v1 import alert_service_pb2_grpc as alert_grpc
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import hash_token, new_token
from civicmeter.gateway import Guard, RequestFacts, UsageEmitter, Verdict
from loadtests.stack import LocalStack
from tests.factories import user_id
from tests.gateway.test_pii import RRN, hyphenated

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
T = TypeVar("T")

AUDITOR = "cmk_guard_it_auditor"
USER = user_id("guard.tester")
POLICY = {
    "version": "guard-it-1",
    "defaults": {
        "sanctioned_services": ["chatgpt", "openai-api"],
        # Every hour is a working hour: the decisions do not depend on when the test runs.
        "working_hours": {"start": "00:00", "end": "24:00", "holidays": None,
                          "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "budgets": {"departments": {"budget-test": {"monthly_krw": "1"}}},
        "detectors": {"repeated_denials": {"min_denials": 3, "window_seconds": 3600}},
    },
    "organizations": {"seoul": {}},
}  # fmt: skip
MEMO = "[대외비]\n2025년 조직개편 추진계획(안)\n정보공개정책과-1234\n위 내용을 요약해줘."


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("guard-stack")
    gateway = new_token()
    policies = workdir / "policies.yaml"
    policies.write_text(yaml.safe_dump(POLICY))
    keys = workdir / "api-keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"id": "gw-seoul", "role": "gateway", "organization_ids": ["seoul"],
         "sha256": hash_token(gateway)},
        {"id": "seoul-audit", "organization_id": "seoul", "role": "auditor",
         "sha256": hash_token(AUDITOR)},
    ]}))  # fmt: skip
    env = {
        "CIVICMETER_POLICY_FILE": str(policies),
        "CIVICMETER_API_KEYS_FILE": str(keys),
        "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": "200",
        # Topics and groups of its own: the suite's other stacks share the broker, and a
        # shared group would hand this stack's events to their storage (and theirs to this).
        "CIVICMETER_TOPIC_RAW": "guard.raw",
        "CIVICMETER_TOPIC_RATED": "guard.rated",
        "CIVICMETER_TOPIC_DLQ": "guard.dlq",
        "CIVICMETER_TOPIC_ALERTS": "guard.alerts",
        "CIVICMETER_PROCESSOR_GROUP_ID": "guard-processor",
        "CIVICMETER_SINK_GROUP_ID": "guard-sink",
    }
    with LocalStack(kafka_bootstrap, workdir, extra_env=env, gateway_token=gateway) as running:
        yield running


@dataclass
class StubProvider:
    """An AI provider on loopback: keeps what reached it, answers with token usage."""

    received: list[str] = field(default_factory=list)
    url: str = ""

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body["prompt"])
        return web.json_response({"usage": {"input_tokens": 1000, "output_tokens": 100}})


@contextlib.asynccontextmanager
async def provider() -> AsyncIterator[StubProvider]:
    stub = StubProvider()
    app = web.Application()
    app.router.add_post("/v1/chat", stub.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}/v1/chat"
    try:
        yield stub
    finally:
        await runner.cleanup()


@dataclass
class Gateway:
    """What an AI gateway does around each request: ask the guard, forward what it may, meter
    the decision."""

    guard: Guard
    stub: StubProvider
    emitter: UsageEmitter

    async def request(self, prompt: str, facts: RequestFacts) -> Verdict:
        verdict = self.guard.check(prompt, facts)
        event = pb.UsageEvent(
            event_id=str(uuid.uuid4()), gateway_id="gw-seoul-1", organization_id="seoul",
            department_id=facts.department, user_id=facts.user_id,
            account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL, provider_name=facts.provider,
            service_id=facts.service, request_model=facts.model, operation_name="chat",
        )  # fmt: skip
        if verdict.prompt is not None:
            async with aiohttp.ClientSession() as session:
                answer = await session.post(self.stub.url, json={"prompt": verdict.prompt})
                usage = (await answer.json())["usage"]
            event.usage.input_tokens = usage["input_tokens"]
            event.usage.output_tokens = usage["output_tokens"]
        verdict.annotate(event)
        event.event_time.FromDatetime(datetime.now(UTC))
        await self.emitter.emit(event)
        await self.emitter.flush()
        return verdict


def facts(department: str = "welfare", provider: str = "openai") -> RequestFacts:
    service = "deepseek-chat" if provider == "deepseek" else "openai-api"
    model = "deepseek-chat" if provider == "deepseek" else "gpt-4o"
    return RequestFacts(
        department=department, user_id=USER, provider=provider, service=service, model=model,
        account_kind="organizational",
    )  # fmt: skip


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 90.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def test_the_guard_prevents_and_every_decision_is_metered(stack: LocalStack) -> None:
    guard = Guard("seoul")
    watching = asyncio.create_task(guard.watch(stack.decision_target, stack.gateway_token))
    try:
        await eventually(lambda: _value(guard.policy_version), lambda v: v == "guard-it-1", 60)
        assert guard.policy_version == "guard-it-1", "no policy from the decision service"
        async with (
            provider() as stub,
            UsageEmitter(stack.ingest_url, binary=True, token=stack.gateway_token) as emitter,
        ):
            gateway = Gateway(guard, stub, emitter)
            deepseek = await gateway.request("보도자료를 요약해줘", facts(provider="deepseek"))
            assert (deepseek.outcome, deepseek.rule_ids) == ("DENY", ("banned_provider",))
            rrn = await gateway.request(f"민원인 주민등록번호 {hyphenated(RRN)} 확인", facts())
            assert rrn.outcome == "REDACT"
            memo = await gateway.request(MEMO, facts())
            assert memo.outcome == "DENY" and "document.confidential" in memo.rule_ids
            spend = await gateway.request("회의록 초안을 다듬어줘", facts("budget-test"))
            assert spend.outcome == "ALLOW"
            # What reached the provider: the redacted prompt and the allowed one, nothing else.
            assert stub.received == [
                "민원인 주민등록번호 900101-1****** 확인",
                "회의록 초안을 다듬어줘",
            ]
            # Once the sink stored that request's cost (5.04 KRW of a 1 KRW budget) and the
            # decision service streamed the new budget state, the department is refused.
            over = await eventually(
                lambda: _value(guard.check("한 번 더", facts("budget-test"))),
                lambda v: v.outcome == "DENY",
            )
            assert over.rule_ids == ("budget.department.month",)
            assert "KRW 1" in over.reason_en and "1원" in over.reason_ko
            denied = await gateway.request("한 번 더", facts("budget-test"))
            assert denied.outcome == "DENY"
            assert len(stub.received) == 2
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    lines = await eventually(
        lambda: _by_decision(stack), lambda v: v.get("deny", (0, Decimal(0)))[0] >= 3
    )
    assert lines["deny"] == (3, Decimal(0))  # denied requests are stored at cost 0
    assert lines["redact"][0] == 1 and lines["redact"][1] > 0
    assert lines["allow"][0] == 1
    alerts = await eventually(lambda: _alerts(stack), lambda v: "repeated_denials" in v)
    assert "repeated_denials" in alerts
    assert "banned_provider" in alerts


async def _value(value: T) -> T:
    return value


async def _by_decision(stack: LocalStack) -> dict[str, tuple[int, Decimal]]:
    request = query_pb.QueryUsageRequest(
        organization_id="seoul", group_by=[query_pb.DIMENSION_DECISION]
    )
    now = datetime.now(UTC)
    request.start_time.FromDatetime(now - timedelta(hours=1))
    request.end_time.FromDatetime(now + timedelta(hours=1))
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        answer = await query_grpc.QueryServiceStub(channel).QueryUsage(
            request, metadata=(("authorization", f"Bearer {AUDITOR}"),), timeout=20
        )
    return {
        line.group_values[0]: (line.event_count, from_money(line.cost)) for line in answer.lines
    }


async def _alerts(stack: LocalStack) -> set[str]:
    request = alert_pb.ListAlertsRequest(filter=alert_pb.AlertFilter(organization_id="seoul"))
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        answer = await alert_grpc.AlertServiceStub(channel).ListAlerts(
            request, metadata=(("authorization", f"Bearer {AUDITOR}"),), timeout=20
        )
    return {alert.alert_type for alert in answer.alerts}
