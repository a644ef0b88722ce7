"""GenAI spans from the real OpenTelemetry SDK, sent by its real OTLP exporters (HTTP and
gRPC) to the running pipeline, stored in ClickHouse and priced to the won: cached input and
reasoning output billed once each, at their own prices."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from loadtests.stack import LocalStack
from tests.factories import user_id
from tests.integration.test_pipeline import breakdown, eventually

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

# config/prices.yaml now (USD per 1M tokens) at config/fx.yaml's latest USD rate.
USD = Decimal("1440.00") / 1_000_000
GPT4O = {"input": Decimal("2.50"), "cache_read": Decimal("1.25"), "output": Decimal("10.00")}
O3_MINI = {"input": Decimal("1.10"), "output": Decimal("4.40"), "reasoning": Decimal("4.40")}


def genai_spans(org: str, *attributes: dict[str, Any]) -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    resource = Resource.create({"service.name": "litellm-proxy",
                                "civicmeter.organization_id": org,
                                "civicmeter.department_id": "welfare"})  # fmt: skip
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("gateway")
    for attrs in attributes:
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes({"gen_ai.operation.name": "chat",
                                 "gen_ai.provider.name": "openai",
                                 "civicmeter.user_id": user_id("lee"), **attrs})  # fmt: skip
    provider.shutdown()
    return memory.get_finished_spans()


async def test_spans_exported_over_otlp_are_stored_and_priced_to_the_won(
    stack: LocalStack,
) -> None:
    org = f"otlp-{uuid.uuid4().hex[:8]}"
    by_http = genai_spans(
        org,
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
         "gen_ai.usage.cache_read.input_tokens": 400, "gen_ai.usage.output_tokens": 500},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.usage.input_tokens": 1},  # not billed
    )  # fmt: skip
    by_grpc = genai_spans(
        org,
        {"gen_ai.request.model": "o3-mini", "gen_ai.usage.input_tokens": 2000,
         "gen_ai.usage.output_tokens": 1000, "gen_ai.usage.reasoning.output_tokens": 600},
    )  # fmt: skip
    http = HttpSpanExporter(
        endpoint=f"{stack.ingest_url}/v1/traces", headers=stack.ingest_headers, timeout=10
    )
    grpc_exporter = GrpcSpanExporter(
        endpoint=stack.ingest_grpc_target, insecure=True, headers=stack.ingest_metadata, timeout=10
    )
    assert await asyncio.to_thread(http.export, by_http) is SpanExportResult.SUCCESS
    assert await asyncio.to_thread(grpc_exporter.export, by_grpc) is SpanExportResult.SUCCESS
    # Exported again (an exporter's retry): counted once.
    assert await asyncio.to_thread(http.export, by_http) is SpanExportResult.SUCCESS
    grpc_exporter.shutdown()

    expected = (
        GPT4O["input"] * 600 + GPT4O["cache_read"] * 400 + GPT4O["output"] * 500
        + O3_MINI["input"] * 2000 + O3_MINI["output"] * 400 + O3_MINI["reasoning"] * 600
    ) * USD  # fmt: skip
    result = await eventually(
        lambda: breakdown(stack, org, query_pb.COST_DIMENSION_DEPARTMENT),
        lambda r: sum(line.event_count for line in r.lines) >= 2,
    )
    assert [(line.key, line.event_count) for line in result.lines] == [("welfare", 2)]
    assert from_money(result.total_cost) == expected
    assert result.total_cost.currency_code == "KRW"
