"""N events in through ingest, the exact sums out through gRPC; duplicates counted once;
malformed events in the dead-letter topic with their reason; trace context carried across."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from civicmeter.api.event_json import encode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.gateway.emitter import IngestRejectedError, UsageEmitter
from loadtests.stack import LocalStack
from tests.factories import user_id
from tests.integration.conftest import read_log

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
T = TypeVar("T")

# config/prices.yaml at the events' times (now): gpt-4o at USD 2.50 and 10.00 per 1M tokens
# converted at the latest USD rate of config/fx.yaml, 1440.00; the ChatGPT seat at KRW 29000.
GPT4O_INPUT = Decimal("0.0036")
GPT4O_OUTPUT = Decimal("0.0144")
CHATGPT_SEAT = Decimal("29000")
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = HOUR - timedelta(days=3)
END = HOUR + timedelta(hours=1)


def usage_event(org: str, dept: str, user: str, when: datetime, **usage: int) -> pb.UsageEvent:
    seat = "seat_months" in usage
    message = pb.UsageEvent(
        event_id=str(uuid.uuid4()),
        gateway_id="gw-test",
        organization_id=org,
        department_id=dept,
        user_id=user_id(user),  # the SDK's pseudonym of the name
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
        provider_name="openai",
        service_id="chatgpt" if seat else "openai-api",
        request_model="" if seat else "gpt-4o",
        operation_name="subscription" if seat else "chat",
        usage=pb.Usage(**usage),
    )
    message.event_time.FromDatetime(when)
    return message


def expected_cost(event: pb.UsageEvent) -> Decimal:
    u = event.usage
    return (
        GPT4O_INPUT * u.input_tokens
        + GPT4O_OUTPUT * u.output_tokens
        + CHATGPT_SEAT * (u.seat_months)
    )


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 90.0
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def breakdown(
    stack: LocalStack,
    org: str,
    dimension: query_pb.CostDimension.ValueType,
    page_size: int = 0,
    page_token: str = "",
) -> query_pb.GetCostBreakdownResponse:
    request = query_pb.GetCostBreakdownRequest(
        group_by=dimension, organization_id=org, page_size=page_size, page_token=page_token
    )
    request.start_time.FromDatetime(START)
    request.end_time.FromDatetime(END)
    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        stub = query_grpc.QueryServiceStub(channel)
        response: query_pb.GetCostBreakdownResponse = await stub.GetCostBreakdown(
            request, timeout=10
        )
        return response


async def test_events_in_exact_sums_out_and_duplicates_counted_once(stack: LocalStack) -> None:
    rng = random.Random(7)
    org = f"it-{uuid.uuid4().hex[:8]}"
    departments = ["welfare", "transport", "culture", "digital-policy"]
    events = [
        usage_event(
            org,
            rng.choice(departments),
            f"u_{rng.randrange(40):04d}",
            START + timedelta(seconds=rng.randrange(3 * 86400)),
            input_tokens=rng.randrange(1, 20_000),
            output_tokens=rng.randrange(0, 4000),
        )
        for _ in range(3000)
    ] + [usage_event(org, d, f"u_seat{i}", START, seat_months=1) for i, d in enumerate(departments)]
    expected: dict[str, Decimal] = {}
    for e in events:
        expected[e.department_id] = expected.get(e.department_id, Decimal(0)) + expected_cost(e)
    total = sum(expected.values(), Decimal(0))

    async with UsageEmitter(stack.ingest_url, token=stack.gateway_token, batch_size=500) as emitter:
        for e in events:
            await emitter.emit(e)
    # A gateway retrying a third of its batches: same ids, sent again, over gRPC this time.
    async with grpc.aio.insecure_channel(stack.ingest_grpc_target) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
        response = await stub.PublishEvents(
            ingest_service_pb2.PublishEventsRequest(events=events[:1000]),
            timeout=30,
            metadata=stack.ingest_metadata,
        )
        assert response.accepted_count == 1000

    result = await eventually(
        lambda: breakdown(stack, org, query_pb.COST_DIMENSION_DEPARTMENT),
        lambda r: sum(line.event_count for line in r.lines) >= len(events),
    )
    got = {line.key: from_money(line.cost) for line in result.lines}
    assert got == expected
    assert {line.key: line.event_count for line in result.lines} == {
        d: sum(1 for e in events if e.department_id == d) for d in departments
    }
    assert from_money(result.total_cost) == total
    assert result.total_cost.currency_code == "KRW"

    # Paging by one returns exactly the unpaged lines.
    paged: list[str] = []
    token = ""
    while True:
        page = await breakdown(stack, org, query_pb.COST_DIMENSION_DEPARTMENT, 1, token)
        paged += [line.key for line in page.lines]
        token = page.next_page_token
        if not token:
            break
    assert paged == sorted(departments)


async def consume(
    stack: LocalStack, topic: str, keep: Callable[[bytes], bool], enough: int, timeout: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of `topic` whose value passes `keep`, read from the start until `enough`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < enough:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                found += [r for r in records if r.value is not None and keep(r.value)]
    finally:
        await consumer.stop()
    return found


async def test_malformed_events_reach_the_dead_letter_topic_with_reason(
    stack: LocalStack,
) -> None:
    org = f"dlq-{uuid.uuid4().hex[:8]}"
    bad_field = usage_event(org, "welfare", "u_1", HOUR, input_tokens=10)
    bad_field.usage.output_tokens = -3
    unpriced = usage_event(org, "welfare", "u_1", HOUR, input_tokens=10)
    unpriced.provider_name, unpriced.service_id = "deepseek", "deepseek-chat"
    garbage = b"\x0a\xff" + org.encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        # A record that is no UsageEventBatch, and a batch of one bad and one unpriced event.
        await producer.send_and_wait("usage.raw", garbage)
        await producer.send_and_wait("usage.raw", encode_event_batch([bad_field, unpriced]))
    finally:
        await producer.stop()
    mine = {garbage, bad_field.SerializeToString(), unpriced.SerializeToString()}
    records = await consume(
        stack, "usage.dlq", lambda v: pb.DeadLetter.FromString(v).payload in mine, enough=3
    )
    letters = [pb.DeadLetter.FromString(r.value or b"") for r in records]
    reasons = {d.payload: (d.reason_code, d.reason) for d in letters}
    assert reasons[garbage][0] == "undecodable"
    assert reasons[bad_field.SerializeToString()][0] == "invalid_field"
    assert reasons[bad_field.SerializeToString()][1].startswith("usage.output_tokens")
    assert reasons[unpriced.SerializeToString()][0] == "unpriced"
    assert "deepseek" in reasons[unpriced.SerializeToString()][1]
    assert all(d.source_topic == "usage.raw" for d in letters)
    # The stack keeps running after bad input.
    stack.check_alive()


async def test_ingest_rejects_bad_input_naming_the_field_and_publishes_none_of_it(
    stack: LocalStack,
) -> None:
    org = f"rej-{uuid.uuid4().hex[:8]}"
    good = usage_event(org, "welfare", "u_1", HOUR, input_tokens=10)
    bad = usage_event(org, "welfare", "u_1", HOUR, input_tokens=10)
    bad.user_id = "kim@example.go.kr"
    async with UsageEmitter(stack.ingest_url, token=stack.gateway_token) as emitter:
        with pytest.raises(IngestRejectedError) as rejected:
            await emitter.send([good, bad])
    assert rejected.value.status == 400
    assert rejected.value.detail["errors"] == [
        {
            "index": 1,
            "field": "data.user_id",  # CloudEvents: the attribute's path in the event
            "message": "must be pseudonymised: 'u_' and 32 lowercase hex digits of a keyed HMAC "
            "(the gateway SDK's pseudonymise_user)",
        }
    ]

    body = json.loads(encode_batch([good]))
    body[0]["data"]["usage"]["input_tokens"] = "many"
    async with aiohttp.ClientSession(headers=stack.ingest_headers) as session:
        async with session.post(f"{stack.ingest_url}/v1/events", json=body) as resp:
            assert resp.status == 400
            assert "$[0].data.usage.input_tokens" in (await resp.json())["error"]
        async with session.post(
            f"{stack.ingest_url}/v1/events", data=b"x", headers={"Content-Type": "text/plain"}
        ) as resp:
            assert resp.status == 415

    async with grpc.aio.insecure_channel(stack.ingest_grpc_target) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PublishEvents(
                ingest_service_pb2.PublishEventsRequest(events=[good, bad]),
                metadata=stack.ingest_metadata,
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].user_id" in (info.value.details() or "")

    # A later valid event of the same organisation arrives; the rejected ones never do.
    later = usage_event(org, "transport", "u_2", HOUR, input_tokens=1000)
    async with UsageEmitter(stack.ingest_url, token=stack.gateway_token) as emitter:
        assert await emitter.send([later]) == 1
    result = await eventually(
        lambda: breakdown(stack, org, query_pb.COST_DIMENSION_DEPARTMENT),
        lambda r: len(r.lines) > 0,
    )
    assert [(line.key, line.event_count) for line in result.lines] == [("transport", 1)]


async def test_processing_spans_link_to_the_span_that_produced_the_event(
    stack: LocalStack,
) -> None:
    org = f"otel-{uuid.uuid4().hex[:8]}"
    event = usage_event(org, "welfare", "u_1", HOUR, input_tokens=10)
    async with UsageEmitter(stack.ingest_url, token=stack.gateway_token) as emitter:
        await emitter.send([event])
    [raw] = await consume(stack, "usage.raw", lambda v: v == encode_event_batch([event]), 1)
    headers = {key: value.decode() for key, value in raw.headers}
    trace_id = headers["traceparent"].split("-")[1]
    pattern = re.compile(r'"name": "process usage.raw".*?"links": \[(.*?)\]', re.S)

    def linked() -> bool:
        return any(trace_id in links for links in pattern.findall(read_log(stack, "processor")))

    def exported() -> bool:  # spans are exported in batches, every few seconds
        return f'"trace_id": "0x{trace_id}"' in read_log(stack, "ingest")

    deadline = time.monotonic() + 60
    while not (linked() and exported()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert linked(), "no processor span links to the ingest span"
    assert exported(), "the ingest span that produced the event was not exported"
