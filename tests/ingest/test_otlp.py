"""OpenTelemetry trace exports into the real ingest service over the real broker: spans made
by the real OpenTelemetry SDK, sent by its real OTLP exporters (HTTP protobuf, gRPC) and as
OTLP/JSON, become usage events with the GenAI token counts split exactly as civicmeter bills
them; bad input gets OTLP's error answer or a partial success naming what was refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb
from opentelemetry.sdk.metrics.export import NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from tests.factories import user_id
from tests.ingest.test_auth import MULTI_TOKEN, SEOUL_TOKEN, Ingest
from tests.ingest.test_cloudevents import published

pytestmark = [pytest.mark.kafka]

RESOURCE = {
    "service.name": "gw-seoul-1",  # the gateway id (the SEOUL key is bound to it)
    "civicmeter.department_id": "welfare",
}
PROTOBUF = "application/x-protobuf"
OPENAI = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}


def spans(
    *span_attributes: dict[str, Any], resource: dict[str, Any] | None = None
) -> Sequence[ReadableSpan]:
    """Finished spans from the real SDK, one per attribute set, as a gateway would make them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-gateway")
    for attributes in span_attributes:
        with tracer.start_as_current_span(f"span {len(memory.get_finished_spans())}") as span:
            span.set_attributes({"civicmeter.user_id": user_id("kim"), **attributes})
    provider.shutdown()
    return memory.get_finished_spans()


def event_id(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"otlp-{context.trace_id:032x}-{context.span_id:016x}"


def span_outcomes(ingest: Ingest) -> dict[str, int]:
    counts: dict[str, int] = {}
    data = ingest.metrics.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "civicmeter.ingest.otlp.spans":
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        counts[str((point.attributes or {})["outcome"])] = int(point.value)
    return counts


def http_exporter(ingest: Ingest, token: str = SEOUL_TOKEN) -> HttpSpanExporter:
    return HttpSpanExporter(
        endpoint=f"http://127.0.0.1:{ingest.settings.http_port}/v1/traces",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


async def post_export(
    ingest: Ingest,
    body: bytes,
    content_type: str = "application/x-protobuf",
    token: str = SEOUL_TOKEN,
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{ingest.settings.http_port}/v1/traces",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_genai_spans_become_events_with_tokens_split_as_billed(ingest: Ingest) -> None:
    exported = spans(
        {**OPENAI, "gen_ai.operation.name": "chat",
         "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cache_read.input_tokens": 300,
         "gen_ai.usage.cache_creation.input_tokens": 100,
         "gen_ai.usage.output_tokens": 500, "gen_ai.usage.reasoning.output_tokens": 200},
        # The older attribute names.
        {"gen_ai.system": "openai", "gen_ai.response.model": "gpt-4o-mini",
         "gen_ai.operation.name": "chat",
         "gen_ai.usage.prompt_tokens": 40, "gen_ai.usage.completion_tokens": 7},
        {"http.request.method": "GET"},  # not a GenAI span
        # An agent span sums its model calls: billing it would count their tokens twice.
        {**OPENAI, "gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 1040},
    )  # fmt: skip
    result = await asyncio.to_thread(http_exporter(ingest).export, exported)
    assert result is SpanExportResult.SUCCESS
    events = await published(ingest, {event_id(exported[0]), event_id(exported[1])})
    first, second = events[event_id(exported[0])], events[event_id(exported[1])]
    assert first.usage == pb.Usage(
        input_tokens=600, cache_read_input_tokens=300, cache_creation_input_tokens=100,
        output_tokens=300, reasoning_tokens=200,
    )  # fmt: skip
    # Every token the span reported is billed exactly once.
    u = first.usage
    assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == 1000
    assert u.output_tokens + u.reasoning_tokens == 500
    assert (first.organization_id, first.department_id, first.gateway_id) == (
        "seoul", "welfare", "gw-seoul-1")  # fmt: skip
    assert (first.provider_name, first.service_id, first.request_model) == (
        "openai", "openai-api", "gpt-4o")  # fmt: skip
    assert (first.user_id, first.operation_name) == (user_id("kim"), "chat")
    assert first.account_kind == pb.ACCOUNT_KIND_ORGANIZATIONAL
    assert first.event_time.ToNanoseconds() == exported[0].start_time
    assert second.usage == pb.Usage(input_tokens=40, output_tokens=7)
    assert (second.provider_name, second.request_model) == ("openai", "gpt-4o-mini")
    assert span_outcomes(ingest) == {"event": 2, "not_genai": 1, "not_billed": 1}


async def test_the_grpc_exporter_and_otlp_json_are_accepted(ingest: Ingest) -> None:
    by_grpc = spans({**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 11})
    exporter = GrpcSpanExporter(
        endpoint=ingest.grpc_target, insecure=True,
        headers=(("authorization", f"Bearer {SEOUL_TOKEN}"),), timeout=10,
    )  # fmt: skip
    assert await asyncio.to_thread(exporter.export, by_grpc) is SpanExportResult.SUCCESS
    exporter.shutdown()

    by_json = spans(
        {**OPENAI, "gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 12}
    )
    document = json_format.MessageToDict(encode_spans(by_json))
    for resource_spans in document["resourceSpans"]:  # OTLP/JSON ids are hex, not base64
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                span["traceId"] = format(by_json[0].context.trace_id, "032x")
                span["spanId"] = format(by_json[0].context.span_id, "016x")
    status, body = await post_export(ingest, json.dumps(document).encode(), "application/json")
    assert (status, json.loads(body)) == (200, {})

    events = await published(ingest, {event_id(by_grpc[0]), event_id(by_json[0])})
    assert events[event_id(by_grpc[0])].usage.input_tokens == 11
    assert events[event_id(by_json[0])].operation_name == "embeddings"


async def test_a_reexported_span_keeps_its_event_id(ingest: Ingest) -> None:
    exported = spans({**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": 9})
    exporter = http_exporter(ingest)
    for _ in range(2):
        assert await asyncio.to_thread(exporter.export, exported) is SpanExportResult.SUCCESS
    # Both copies carry the one id the processor and ClickHouse deduplicate on.
    copies = await copies_on_topic(ingest, event_id(exported[0]), expected=2)
    assert copies == 2


async def copies_on_topic(ingest: Ingest, wanted: str, expected: int) -> int:
    consumer = AIOKafkaConsumer(
        ingest.topic,
        bootstrap_servers=ingest.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    copies = 0
    try:
        deadline = time.monotonic() + 30
        while copies < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    batch = pb.UsageEventBatch.FromString(record.value or b"")
                    copies += sum(1 for e in batch.events if e.event_id == wanted)
    finally:
        await consumer.stop()
    return copies


async def test_refused_spans_are_a_partial_success_naming_them(ingest: Ingest) -> None:
    good = {**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5}
    batch = spans(
        good,
        {**good, "gen_ai.usage.input_tokens": -3},
        {**good, "civicmeter.organization_id": "busan"},  # not the key's organisation
        {**good, "civicmeter.user_id": "kim@seoul.go.kr"},  # not a pseudonym
        {**good, "gen_ai.usage.input_tokens": 5, "gen_ai.usage.cache_read.input_tokens": 9},
    )
    status, body = await post_export(ingest, encode_spans(batch).SerializeToString())
    assert status == 200
    partial = otlp_pb.ExportTraceServiceResponse.FromString(body).partial_success
    assert partial.rejected_spans == 4
    message = partial.error_message
    assert "gen_ai.usage.input_tokens must not be negative" in message
    assert (
        "civicmeter.organization_id: key 'gw-seoul' may not report usage for organisation"
        in message
    )
    assert "civicmeter.user_id: must be pseudonymised" in message
    assert "must include the cache_read and cache_creation" in message
    assert "kim@" not in message  # a refused user id is never echoed
    for span in batch[1:]:
        assert format(span.context.trace_id, "032x") in message
    await published(ingest, {event_id(batch[0])})  # the valid span of the batch went through


async def test_a_key_of_several_organisations_needs_the_organisation_attribute(
    ingest: Ingest,
) -> None:
    good = {**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5}
    batch = spans(
        good,
        {**good, "civicmeter.organization_id": "busan"},
        {**good, "civicmeter.organization_id": "gyeonggi"},
    )
    status, body = await post_export(
        ingest, encode_spans(batch).SerializeToString(), token=MULTI_TOKEN
    )
    partial = otlp_pb.ExportTraceServiceResponse.FromString(body).partial_success
    assert (status, partial.rejected_spans) == (200, 2)
    assert "no organisation" in partial.error_message
    assert "'gyeonggi'" in partial.error_message
    events = await published(ingest, {event_id(batch[1])})
    assert events[event_id(batch[1])].organization_id == "busan"


async def test_undecodable_bodies_get_the_otlp_error_answer(ingest: Ingest) -> None:
    status, body = await post_export(ingest, b"\xff\xff\xff not protobuf")
    assert status == 400
    assert "ExportTraceServiceRequest" in Status.FromString(body).message

    status, body = await post_export(ingest, b"{not json", "application/json")
    assert status == 400
    assert "OTLP/JSON" in json.loads(body)["message"]

    async with grpc.aio.insecure_channel(ingest.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda raw: raw,
            response_deserializer=otlp_pb.ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export(b"\xff\xff\xff", metadata=(("authorization", f"Bearer {SEOUL_TOKEN}"),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export(b"", timeout=10)  # no credential
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    status, _ = await post_export(ingest, b"", token="wrong")
    assert status == 401
