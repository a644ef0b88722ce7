"""The emitter against an ingest-like server on loopback that answers 429/503 with Retry-After."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from civicmeter.api.event_json import decode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2
from civicmeter.gateway import IngestRejectedError, UsageEmitter
from tests.factories import event
from tests.scripted_http import ScriptedServer, retry_after, retry_after_date, scripted_server


def accept(body: bytes) -> web.Response:
    return web.json_response({"accepted_count": len(json.loads(body))}, status=202)


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[str, ScriptedServer]]:
    async with scripted_server("/v1/events", accept) as (url, server):
        yield url.removesuffix("/v1/events"), server


def event_ids(body: bytes) -> list[str]:
    return [e.event_id for e in decode_batch(body)]


async def test_a_batch_is_resent_with_the_same_ids_after_the_waits_ingest_asks_for(
    ingest: tuple[str, ScriptedServer],
) -> None:
    base, server = ingest
    server.script = [(503, retry_after("1")), (429, retry_after_date(2))]
    events = [event(event_id=f"evt-retry-{i}") for i in range(3)]
    async with UsageEmitter(base, batch_size=10, token="gk-retry-test") as emitter:
        for e in events:
            await emitter.emit(e)
    # Leaving the block flushed the batch: three attempts, one body, the same three ids.
    assert len(server.bodies) == 3
    assert [event_ids(body) for body in server.bodies] == [
        ["evt-retry-0", "evt-retry-1", "evt-retry-2"]
    ] * 3
    first, second = server.gaps()
    assert 1.0 <= first < 1.5
    assert 1.0 <= second < 2.5  # an HTTP-date: whole seconds, 1-2 s after the answer
    # Every attempt carries the gateway's credential.
    assert [h.get("Authorization") for h in server.headers] == ["Bearer gk-retry-test"] * 3


async def test_a_long_retry_after_is_cut_to_the_emitters_bound(
    ingest: tuple[str, ScriptedServer],
) -> None:
    base, server = ingest
    server.script = [(429, retry_after("3600"))]
    async with UsageEmitter(base, max_retry_after_seconds=0.4) as emitter:
        assert await emitter.send([event(event_id="evt-bound")]) == 1
    assert 0.4 <= server.gaps()[0] < 0.9
    assert [event_ids(body) for body in server.bodies] == [["evt-bound"]] * 2


async def test_protobuf_batches_are_resent_byte_for_byte(
    ingest: tuple[str, ScriptedServer],
) -> None:
    base, server = ingest
    server.script = [(503, retry_after("0"))]
    server.success = lambda body: web.json_response(
        {"accepted_count": len(ingest_service_pb2.PublishEventsRequest.FromString(body).events)},
        status=202,
    )
    async with UsageEmitter(base, binary=True) as emitter:
        assert await emitter.send([event(event_id="evt-pb-1"), event(event_id="evt-pb-2")]) == 2
    first, again = (ingest_service_pb2.PublishEventsRequest.FromString(b) for b in server.bodies)
    assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
    assert server.bodies[0] == server.bodies[1]


async def test_ingest_unavailable_past_max_attempts_is_a_connection_error(
    ingest: tuple[str, ScriptedServer],
) -> None:
    base, server = ingest
    server.script = [(503, retry_after("0"))] * 10
    async with UsageEmitter(base, max_attempts=3) as emitter:
        with pytest.raises(ConnectionError, match="after 3 attempts: HTTP 503"):
            await emitter.send([event()])
        # The batch stays in the caller's hands: nothing of it was acknowledged.
    assert len(server.bodies) == 3


async def test_a_refusal_is_not_retried(ingest: tuple[str, ScriptedServer]) -> None:
    base, server = ingest
    server.success = lambda _: web.json_response({"error": "events[0].user_id: ..."}, status=400)
    async with UsageEmitter(base) as emitter:
        with pytest.raises(IngestRejectedError) as refused:
            await emitter.send([event()])
    assert refused.value.status == 400
    assert refused.value.detail == {"error": "events[0].user_id: ..."}
    assert len(server.bodies) == 1
