"""The answer cache: refreshed before it expires, never served older than its time to live,
and never one organisation's answer for another, with every cached call still checked,
rate-limited and audited."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.core.access.auth import hash_token, parse_api_keys
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AccessInterceptor, AuditLog
from civicmeter.query.cache import AnswerCache
from civicmeter.query.usage_api import QueryService
from civicmeter.sink.event_writer import write_events
from tests.factories import event
from tests.query.test_limits import request
from tests.sink.test_event_writer import rated


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


class Source:
    """Answers 1, 2, 3, ... one per computation; `gate` holds a computation until set."""

    def __init__(self) -> None:
        self.computed = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> int:
        self.computed += 1
        answer = self.computed
        await self.gate.wait()
        return answer


async def test_a_due_answer_is_served_at_once_while_one_refresh_runs() -> None:
    clock, source = Clock(), Source()
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=10, clock=clock)
    assert await cache.get_or_compute("q", source, source) == 1
    clock.now = 8.0  # the refresh starts a tenth of the time to live before expiry
    assert cache.get("q") == 1
    await asyncio.sleep(0)
    assert source.computed == 1
    source.gate.clear()
    clock.now = 9.5
    assert [cache.get("q") for _ in range(5)] == [1] * 5  # nobody waits
    await asyncio.sleep(0)
    assert source.computed == 2  # one refresh for all of them
    source.gate.set()
    await until(lambda: cache.get("q") == 2)
    clock.now = 9.5 + 10  # the refreshed answer lives its own time to live, then expires
    assert cache.get("q") is None


async def test_an_answer_is_never_served_past_its_time_to_live() -> None:
    clock, source = Clock(), Source()
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=10, clock=clock)
    await cache.get_or_compute("q", source, source)
    source.gate.clear()
    clock.now = 9.5
    assert cache.get("q") == 1  # starts the refresh, which is held
    clock.now = 10.0
    assert cache.get("q") is None

    async def never() -> int:
        raise AssertionError("a caller must join the refresh, not start another computation")

    waiter = asyncio.create_task(cache.get_or_compute("q", never))
    await asyncio.sleep(0)
    assert not waiter.done()
    source.gate.set()
    assert await waiter == 2
    assert source.computed == 2


def test_answers_not_asked_again_are_dropped_once_expired() -> None:
    clock = Clock()
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=10, clock=clock)
    for second in range(100):  # a dashboard's window moving on: each question asked once
        clock.now = second
        cache.put(f"until {second}", second)
    assert len(cache) == 10  # the answers of the last time to live, not all a hundred
    assert [cache.get(f"until {s}") for s in (89, 90, 99)] == [None, 90, 99]


async def test_a_failed_refresh_keeps_the_answer_until_it_expires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cache: AnswerCache[str, int] = AnswerCache(ttl_seconds=10, clock=clock)

    async def first() -> int:
        return 1

    async def broken() -> int:
        raise RuntimeError("storage unavailable")

    await cache.get_or_compute("q", first, broken)
    clock.now = 9.5
    with caplog.at_level(logging.WARNING, logger="civicmeter.query.cache"):
        assert cache.get("q") == 1
        await until(lambda: "refreshing a cached answer failed" in caplog.text)
    assert cache.get("q") == 1
    clock.now = 10.0
    assert cache.get("q") is None


TOKENS = {"seoul": "cmk_cache_seoul", "busan": "cmk_cache_busan", "platform": "cmk_cache_all"}


@dataclass
class Api:
    stub: query_grpc.QueryServiceStub
    audit: AuditLog


@pytest.fixture
async def api(clickhouse: Client) -> AsyncIterator[Api]:
    write_events(
        clickhouse,
        rated(
            event(organization_id="seoul"),
            event(organization_id="busan"),
            event(organization_id="busan"),
        ),
    )
    keys = parse_api_keys({"keys": [
        {"id": "seoul", "organization_id": "seoul", "role": "finance-reader",
         "sha256": hash_token(TOKENS["seoul"])},
        {"id": "busan", "organization_id": "busan", "role": "finance-reader",
         "sha256": hash_token(TOKENS["busan"])},
        {"id": "platform", "organization_id": "*", "role": "admin",
         "sha256": hash_token(TOKENS["platform"])},
    ]})  # fmt: skip
    storage = Storage(clickhouse)
    audit = AuditLog(storage)
    server = grpc.aio.server(interceptors=[AccessInterceptor(keys, audit)])
    query_grpc.add_QueryServiceServicer_to_server(QueryService(storage, cache_seconds=60), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Api(query_grpc.QueryServiceStub(channel), audit)
    await server.stop(None)


async def answers(api: Api, question: query_pb.GetCostBreakdownRequest) -> dict[str, object]:
    """What each caller gets for the very same request bytes."""
    seen: dict[str, object] = {}
    for caller, token in TOKENS.items():
        response = await api.stub.GetCostBreakdown(
            question, metadata=(("authorization", f"Bearer {token}"),)
        )
        seen[caller] = [(line.key, line.event_count) for line in response.lines]
    return seen


async def test_two_tenants_asking_the_same_question_each_get_their_own_answer(
    api: Api, clickhouse: Client
) -> None:
    question = request("")  # no organisation named: each key's own
    first = await answers(api, question)
    assert first == {
        "seoul": [("seoul", 1)],
        "busan": [("busan", 2)],
        "platform": [("busan", 2), ("seoul", 1)],
    }
    write_events(clickhouse, rated(event(organization_id="seoul")))
    # Answered from the cache (the new event is not in it yet), and still each its own.
    assert await answers(api, question) == first
    for token, asked, code in [
        (TOKENS["seoul"], "busan", grpc.StatusCode.PERMISSION_DENIED),
        ("cmk_unknown", "", grpc.StatusCode.UNAUTHENTICATED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.stub.GetCostBreakdown(
                request(asked), metadata=(("authorization", f"Bearer {token}"),)
            )
        assert refused.value.code() == code
    await api.audit.flush()
    audited = Counter(
        tuple(row)
        for row in clickhouse.query(
            "SELECT key_id, organization_id, status FROM audit_log"
        ).result_rows
    )
    assert audited == {  # every call, the cached ones too
        ("seoul", "seoul", "OK"): 2,
        ("busan", "busan", "OK"): 2,
        ("platform", "*", "OK"): 2,
        ("seoul", "busan", "PERMISSION_DENIED"): 1,  # the organisation it targeted
        ("unauthenticated", "", "UNAUTHENTICATED"): 1,
    }
