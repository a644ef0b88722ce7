"""CloudEvents in each HTTP mode of the official SDK, and LiteLLM calls through the LiteLLM
callback (a failed one too), into the running pipeline: stored in ClickHouse and priced to the
won."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import grpc
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from civicmeter.api.event_json import EVENT_TYPE
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import load_catalog
from civicmeter.gateway import UsageEmitter, pseudonymise_user
from loadtests.stack import DEFAULT_PRICES, LocalStack
from tests.factories import user_id
from tests.integration.test_otlp_pipeline import GPT4O, USD
from tests.integration.test_pipeline import breakdown, eventually

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
with warnings.catch_warnings():  # LiteLLM's modules warn as they load (pydantic)
    warnings.simplefilter("ignore")
    import litellm

    from civicmeter.gateway.litellm import CivicmeterLogger
    from tests.gateway.test_litellm import litellm_callbacks

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.clickhouse,
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm.*"),
]


def gpt4o_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (GPT4O["input"] * input_tokens + GPT4O["output"] * output_tokens) * USD


async def total_cost(stack: LocalStack, org: str, events: int) -> tuple[int, Decimal]:
    result = await eventually(
        lambda: breakdown(stack, org, query_pb.COST_DIMENSION_DEPARTMENT),
        lambda r: sum(line.event_count for line in r.lines) >= events,
    )
    assert result.total_cost.currency_code == "KRW"
    return sum(line.event_count for line in result.lines), from_money(result.total_cost)


async def test_cloudevents_in_every_mode_are_priced_to_the_won(stack: LocalStack) -> None:
    org = f"ce-{uuid.uuid4().hex[:8]}"
    data: dict[str, Any] = {
        "organization_id": org, "department_id": "welfare", "user_id": user_id("kim"),
        "account_kind": "organizational", "provider_name": "openai", "service_id": "openai-api",
        "request_model": "gpt-4o", "operation_name": "chat",
    }  # fmt: skip

    def event(payload: dict[str, Any] | bytes, content_type: str) -> CloudEvent:
        return CloudEvent(
            attributes={"id": f"ce-{uuid.uuid4().hex}", "source": "/gateways/gw-it",
                        "type": EVENT_TYPE, "datacontenttype": content_type},
            data=payload,
        )  # fmt: skip

    protobuf = pb.UsageEvent(
        organization_id=org, department_id="welfare", user_id=user_id("kim"),
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL, provider_name="openai",
        service_id="openai-api", request_model="gpt-4o", operation_name="chat",
        usage=pb.Usage(input_tokens=300, output_tokens=30),
    ).SerializeToString()  # fmt: skip
    binary = ce_http.to_binary_event(
        event({**data, "usage": {"input_tokens": 100, "output_tokens": 10}}, "application/json")
    )
    structured = ce_http.to_structured_event(event(protobuf, "application/protobuf"))
    batch = [
        event({**data, "usage": {"input_tokens": 200 + n, "output_tokens": 20}}, "application/json")
        for n in range(2)
    ]
    requests = [
        (binary.headers, binary.body),
        (structured.headers, structured.body),
        ({"content-type": "application/cloudevents-batch+json"},
         b"[" + b",".join(JSONFormat().write(e) for e in batch) + b"]"),
    ]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for headers, body in requests:
            async with session.post(
                f"{stack.ingest_url}/v1/events", data=body,
                headers={**stack.ingest_headers, **headers},
            ) as resp:  # fmt: skip
                assert resp.status == 202, await resp.text()
    expected = gpt4o_cost(100 + 300 + 200 + 201, 10 + 30 + 20 + 20)
    assert await total_cost(stack, org, 4) == (4, expected)


def counted(emitter: UsageEmitter) -> list[int]:
    """The numbers of events ingest accepted, call by call, of the emitter's sends."""
    accepted: list[int] = []
    send = emitter.send

    async def counting(events: Sequence[pb.UsageEvent]) -> int:
        accepted.append(await send(events))
        return accepted[-1]

    emitter.send = counting  # type: ignore[method-assign]
    return accepted


async def until_accepted(accepted: list[int], events: int) -> None:
    """LiteLLM logs in background tasks: wait until the callback's events are accepted."""
    deadline = time.monotonic() + 60
    while sum(accepted) < events:
        assert time.monotonic() < deadline, f"the callback sent {sum(accepted)} of {events}"
        await asyncio.sleep(0.1)


async def test_litellm_calls_are_priced_to_the_won(stack: LocalStack) -> None:
    org = f"llm-{uuid.uuid4().hex[:8]}"
    emitter = UsageEmitter(stack.ingest_url, token=stack.gateway_token)
    accepted = counted(emitter)
    logger = CivicmeterLogger(emitter, hmac_key=b"k" * 32, organization_id=org, gateway_id="gw-it")
    try:
        with litellm_callbacks(logger):
            responses = [
                await litellm.acompletion(
                    model="openai/gpt-4o",
                    messages=[{"role": "user", "content": "hello " * n}],
                    mock_response="hi " * n,
                    user="park",
                    metadata={"civicmeter_department_id": "culture"},
                )
                for n in range(1, 4)
            ]
            await until_accepted(accepted, 3)
    finally:
        await emitter.close()
    expected = sum(
        (gpt4o_cost(r.usage.prompt_tokens, r.usage.completion_tokens) for r in responses),
        Decimal(0),
    )
    assert await total_cost(stack, org, 3) == (3, expected)


async def usage_by_user(
    stack: LocalStack, org: str, events: int
) -> dict[str, tuple[int, pb.Usage, Decimal]]:
    """Each user's events, summed quantities and cost, once `events` events are stored."""
    request = query_pb.QueryUsageRequest(organization_id=org, group_by=[query_pb.DIMENSION_USER])
    now = datetime.now(UTC)
    request.start_time.FromDatetime(now - timedelta(hours=1))
    request.end_time.FromDatetime(now + timedelta(hours=1))

    async def query() -> query_pb.QueryUsageResponse:
        async with grpc.aio.insecure_channel(stack.query_target) as channel:
            answer: query_pb.QueryUsageResponse = await query_grpc.QueryServiceStub(
                channel
            ).QueryUsage(request, timeout=10)
            return answer

    answer = await eventually(query, lambda a: a.totals.event_count >= events)
    return {
        line.group_values[0]: (line.event_count, line.quantities, from_money(line.cost))
        for line in answer.lines
    }


async def test_a_failed_litellm_call_is_stored_and_priced_as_one_request(
    stack: LocalStack,
) -> None:
    org = f"llm-{uuid.uuid4().hex[:8]}"
    key = b"k" * 32
    emitter = UsageEmitter(stack.ingest_url, token=stack.gateway_token)
    accepted = counted(emitter)
    logger = CivicmeterLogger(emitter, hmac_key=key, organization_id=org, gateway_id="gw-it")
    call: dict[str, Any] = {
        "model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hello there"}],
        "metadata": {"civicmeter_department_id": "culture"}, "num_retries": 0,
    }  # fmt: skip
    try:
        with litellm_callbacks(logger):
            answered = await litellm.acompletion(**call, mock_response="hi", user="park")
            with pytest.raises(litellm.exceptions.RateLimitError):
                await litellm.acompletion(
                    **call,
                    user="choi",
                    mock_response=litellm.exceptions.RateLimitError(
                        "slow down", llm_provider="openai", model="gpt-4o"
                    ),
                )
            await until_accepted(accepted, 2)
    finally:
        await emitter.close()
    # The catalog prices a bare request of the OpenAI API (at 0 now: the API bills tokens, and
    # a refused call consumed none). Without a price the event would be dead-lettered unpriced.
    per_request = load_catalog(DEFAULT_PRICES).unit_price(
        "openai", "openai-api", "gpt-4o", "requests", time.time()
    )
    assert per_request is not None
    by_user = await usage_by_user(stack, org, 2)
    assert by_user[pseudonymise_user(key, "choi")] == (1, pb.Usage(requests=1), per_request)
    tokens = answered.usage.prompt_tokens, answered.usage.completion_tokens
    assert by_user[pseudonymise_user(key, "park")] == (
        1, pb.Usage(input_tokens=tokens[0], output_tokens=tokens[1]), gpt4o_cost(*tokens),
    )  # fmt: skip
