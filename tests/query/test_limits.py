"""Rate limits per key and the short-lived answer cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AccessInterceptor, RateLimiter
from civicmeter.query.cache import AnswerCache
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.event_writer import write_events
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated

TOKEN = "cmk_limits"


def test_the_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.allow("k", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("k", now=0.5)  # one token back after half a second at 2/s
    assert not limiter.allow("k", now=0.5)
    assert limiter.allow("other", now=0.5)  # buckets are per key
    assert [limiter.allow("k", now=100.0) for _ in range(4)] == [True, True, True, False]


def test_cached_answers_expire() -> None:
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=60)
    cache.put("q", 1)
    assert cache.get("q") == 1 and cache.get("other") is None
    assert AnswerCache[str, int](ttl_seconds=0).get("q") is None
    expired: AnswerCache[str, int] = AnswerCache(ttl_seconds=-1)
    expired.put("q", 1)
    assert expired.get("q") is None


@pytest.fixture
async def stub(clickhouse: Client) -> AsyncIterator[query_grpc.QueryServiceStub]:
    write_events(clickhouse, rated(event()))
    keys = parse_api_keys(
        {
            "keys": [
                {"id": "k", "organization_id": "*", "role": "admin", "sha256": hash_token(TOKEN)}
            ]
        }
    )
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, None, RateLimiter(1, 3))])
    query_grpc.add_QueryServiceServicer_to_server(
        QueryService(Storage(clickhouse), cache_seconds=60), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield query_grpc.QueryServiceStub(channel)
    await server.stop(None)


def request(org: str = "") -> query_pb.GetCostBreakdownRequest:
    r = query_pb.GetCostBreakdownRequest(
        group_by=query_pb.COST_DIMENSION_ORGANIZATION, organization_id=org
    )
    r.start_time.FromDatetime(NOW - timedelta(days=1))
    r.end_time.FromDatetime(NOW + timedelta(days=1))
    return r


async def test_a_key_over_its_rate_is_resource_exhausted(
    stub: query_grpc.QueryServiceStub,
) -> None:
    auth = (("authorization", f"Bearer {TOKEN}"),)
    for _ in range(3):
        await stub.GetCostBreakdown(request(), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetCostBreakdown(request(), metadata=auth)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (info.value.details() or "")


async def test_the_same_question_is_answered_from_the_cache_and_another_is_not(
    stub: query_grpc.QueryServiceStub, clickhouse: Client
) -> None:
    auth = (("authorization", f"Bearer {TOKEN}"),)
    before = await stub.GetCostBreakdown(request(), metadata=auth)
    write_events(clickhouse, rated(event(), event(organization_id="busan")))
    cached = await stub.GetCostBreakdown(request(), metadata=auth)
    fresh = await stub.GetCostBreakdown(request("busan"), metadata=auth)
    assert cached == before
    assert [(line.key, line.event_count) for line in fresh.lines] == [("busan", 1)]


async def test_concurrent_askers_share_one_computation() -> None:
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=0)  # coalescing works uncached too
    calls = 0
    gate = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    waiters = [asyncio.create_task(cache.get_or_compute("q", compute)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 10
    assert calls == 1

    async def fail() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await cache.get_or_compute("q", fail)
