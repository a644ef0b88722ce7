"""The process's global OpenTelemetry providers, kept in memory for this package's tests.

The HTTP and gRPC instrumentations use the global providers; they can be set once per process,
so this package sets them (no other test does) and its tests read what they recorded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from civicmeter.core.telemetry.setup import instrument_http_servers
from tests.telemetry.memory import Recorded


@pytest.fixture(scope="package")
def global_telemetry() -> Iterator[Recorded]:
    memory = Recorded(InMemoryMetricReader(), InMemorySpanExporter())
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory.exporter))
    meter_provider = MeterProvider(metric_readers=[memory.reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if trace.get_tracer_provider() is not tracer_provider:
        pytest.fail("another test installed the global tracer provider first")
    if metrics.get_meter_provider() is not meter_provider:
        pytest.fail("another test installed the global meter provider first")
    instrument_http_servers({})
    yield memory
    AioHttpServerInstrumentor().uninstrument()
    memory.exporter.shutdown()  # later tests' spans are no longer kept
