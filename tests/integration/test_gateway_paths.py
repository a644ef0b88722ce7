"""CloudEvents in each HTTP mode of the official SDK, and LiteLLM calls through the LiteLLM
callback, into the running pipeline: stored in ClickHouse and priced to the won."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from civicmeter.core.event_json import EVENT_TYPE
from civicmeter.core.money import from_money
from civicmeter.gateway import UsageEmitter
from civicmeter.query.v1 import query_service_pb2 as query_pb
from civicmeter.usage.v1 import usage_event_pb2 as pb
from loadtests.stack import LocalStack
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


async def test_litellm_calls_are_priced_to_the_won(stack: LocalStack) -> None:
    org = f"llm-{uuid.uuid4().hex[:8]}"
    emitter = UsageEmitter(stack.ingest_url, token=stack.gateway_token)
    accepted: list[int] = []
    send = emitter.send

    async def counted(events: Sequence[pb.UsageEvent]) -> int:
        accepted.append(await send(events))
        return accepted[-1]

    emitter.send = counted  # type: ignore[method-assign]
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
            # LiteLLM logs in background tasks: wait until the three events are accepted.
            deadline = time.monotonic() + 60
            while sum(accepted) < 3:
                assert time.monotonic() < deadline, f"the callback sent {sum(accepted)} of 3"
                await asyncio.sleep(0.1)
    finally:
        await emitter.close()
    expected = sum(
        (gpt4o_cost(r.usage.prompt_tokens, r.usage.completion_tokens) for r in responses),
        Decimal(0),
    )
    assert await total_cost(stack, org, 3) == (3, expected)
