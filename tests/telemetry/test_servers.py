"""Ingest's HTTP and gRPC fronts, in this process on the real broker: a gateway's
`traceparent` continues into a SERVER span, the producer span and the Kafka record's headers;
every request is timed with its route or method and status."""

from __future__ import annotations

import secrets
import time

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.trace import SpanKind

from civicmeter.api.event_json import encode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.api.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from tests.ingest.test_auth import JSON, Ingest, now_event, running_ingest
from tests.telemetry.memory import Recorded

pytestmark = pytest.mark.kafka


def traceparent() -> tuple[str, str, str]:
    """A gateway's trace context: (header, trace id, span id) in hex."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def record_headers(ingest: Ingest, count: int) -> list[dict[str, str]]:
    """The headers of the first `count` records of the ingest's topic."""
    consumer = AIOKafkaConsumer(
        ingest.topic,
        bootstrap_servers=ingest.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[dict[str, str]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < count:
            assert time.monotonic() < deadline, "the records never reached the topic"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [{k: v.decode() for k, v in r.headers} for r in records]
    finally:
        await consumer.stop()
    return found


async def test_the_gateways_trace_continues_through_both_fronts_into_kafka(
    kafka_bootstrap: str, global_telemetry: Recorded
) -> None:
    http_header, http_trace, http_parent = traceparent()
    grpc_header, grpc_trace, grpc_parent = traceparent()
    async with running_ingest(kafka_bootstrap, None) as ingest:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                ingest.url,
                data=encode_batch([now_event()]),
                headers={"Content-Type": JSON, "traceparent": http_header},
            ) as response,
        ):
            assert response.status == 202
        async with grpc.aio.insecure_channel(ingest.grpc_target) as channel:
            stub = ingest_grpc.IngestServiceStub(channel)
            await stub.PublishEvents(
                ingest_pb.PublishEventsRequest(events=[now_event()]),
                metadata=(("traceparent", grpc_header),),
                timeout=10,
            )
        headers = await record_headers(ingest, 2)
        topic = ingest.topic

    for trace_id, parent, name in (
        (http_trace, http_parent, "POST /v1/events"),
        (grpc_trace, grpc_parent, "/civicmeter.ingest.v1.IngestService/PublishEvents"),
    ):
        [server] = [
            s for s in global_telemetry.spans(name) if f"{s.context.trace_id:032x}" == trace_id
        ]
        assert server.kind == SpanKind.SERVER
        assert server.parent is not None and f"{server.parent.span_id:016x}" == parent
        [send] = [
            s
            for s in global_telemetry.spans(f"send {topic}")
            if s.parent is not None and s.parent.span_id == server.context.span_id
        ]
        attributes = dict(send.attributes or {})
        assert attributes["messaging.client.id"] == "civicmeter-ingest"
        assert attributes["server.address"] == kafka_bootstrap.rsplit(":", 1)[0]
        assert attributes["server.port"] == int(kafka_bootstrap.rsplit(":", 1)[1])
        # The record carries the producer span's context: the trace goes on through Kafka.
        assert f"00-{trace_id}-{send.context.span_id:016x}-01" in [
            h.get("traceparent") for h in headers
        ]


async def test_requests_are_timed_by_route_or_method_and_status(
    kafka_bootstrap: str, global_telemetry: Recorded
) -> None:
    async with running_ingest(kafka_bootstrap, None) as ingest:
        async with aiohttp.ClientSession() as session:
            for content_type in (JSON, "text/plain"):
                async with session.post(
                    ingest.url,
                    data=encode_batch([now_event()]),
                    headers={"Content-Type": content_type},
                ):
                    pass
        async with grpc.aio.insecure_channel(ingest.grpc_target) as channel:
            stub = ingest_grpc.IngestServiceStub(channel)
            await stub.PublishEvents(ingest_pb.PublishEventsRequest(events=[now_event()]))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.PublishEvents(
                    ingest_pb.PublishEventsRequest(events=[now_event(user_id="")])
                )

    http = {
        (p.attributes["http.request.method"], p.attributes["http.route"],
         p.attributes["http.response.status_code"]): p.count
        for p in global_telemetry.points("http.server.request.duration")
    }  # fmt: skip
    assert http[("POST", "/v1/events", 202)] >= 1
    assert http[("POST", "/v1/events", 415)] >= 1
    publish = "/civicmeter.ingest.v1.IngestService/PublishEvents"
    rpc = {
        p.attributes["rpc.grpc.status_code"]: p.count
        for p in global_telemetry.points("rpc.server.call.duration")
        if p.attributes["rpc.method"] == publish and p.attributes["rpc.system"] == "grpc"
    }
    assert rpc["OK"] >= 1
    assert rpc["INVALID_ARGUMENT"] >= 1
    assert all(p.sum > 0 for p in global_telemetry.points("rpc.server.call.duration"))
