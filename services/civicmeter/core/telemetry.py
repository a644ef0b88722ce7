"""OpenTelemetry set up once per process from the standard OTEL_* variables.

OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "none" (the default), "console" or "otlp"
(metrics also "prometheus", served on OTEL_EXPORTER_PROMETHEUS_HOST:PORT, default :9464).
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the process; OTEL_SDK_DISABLED=true
turns everything off. OTLP endpoints come from OTEL_EXPORTER_OTLP_* as the exporter reads them.

HTTP and gRPC servers are traced by OpenTelemetry's instrumentations, which continue a
caller's `traceparent` (instrument_http_servers here, core/grpc_server.py for gRPC).

Kafka spans follow the messaging semantic conventions. One span covers a batch, not an event
(a span per event would cost more than the event itself); the trace context of the span that
produced a message rides in its `traceparent` header, one producer span per destination
topic. The span that processes a batch continues the trace of its first record's producer
and links to every producer of the batch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import metrics, propagate, trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Link, SpanKind

from civicmeter.core.config import ConfigError, env_port

# aiokafka gives headers as a sequence of pairs; faust may give a mapping.
KafkaHeaders = Sequence[tuple[str, bytes]] | Mapping[str, bytes]

_configured = False


@dataclass(frozen=True)
class Telemetry:
    tracer: trace.Tracer
    meter: metrics.Meter


def setup_telemetry(service_name: str, env: Mapping[str, str]) -> Telemetry:
    """Install the global tracer and meter providers (once per process) and return handles."""
    global _configured
    if not _configured and env.get("OTEL_SDK_DISABLED", "").lower() != "true":
        resource = Resource.create(
            {
                "service.name": env.get("OTEL_SERVICE_NAME", service_name),
                "service.namespace": "civicmeter",
            }
        )
        tracer_provider = TracerProvider(resource=resource)
        span_exporter = _span_exporter(env.get("OTEL_TRACES_EXPORTER", "none"))
        if span_exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
        readers = _metric_readers(env)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        instrument_http_servers(env)
        _configured = True
    return Telemetry(
        trace.get_tracer(f"civicmeter.{service_name}"),
        metrics.get_meter(f"civicmeter.{service_name}"),
    )


def instrument_http_servers(env: Mapping[str, str]) -> None:
    """Trace and time every aiohttp server built from now on (OpenTelemetry's middleware:
    a SERVER span continuing the caller's `traceparent`, http.server.request.duration)."""
    # The instrumentations read their conventions from the process environment only; the
    # metric contract is the stable HTTP conventions' (seconds, http.route).
    os.environ.setdefault(
        "OTEL_SEMCONV_STABILITY_OPT_IN", env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    )
    instrumentor = AioHttpServerInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        with warnings.catch_warnings():
            # It subclasses web.Application to add its middleware, which aiohttp warns of.
            warnings.filterwarnings("ignore", "Inheritance class", DeprecationWarning)
            instrumentor.instrument()


def shutdown_telemetry() -> None:
    """Flush exporters; call at the end of a service's main()."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.shutdown()


def _span_exporter(name: str) -> SpanExporter | None:
    name = name.strip().lower()
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ConfigError(f"OTEL_TRACES_EXPORTER must be none, console or otlp; got {name!r}")


def _metric_readers(env: Mapping[str, str]) -> list[MetricReader]:
    name = env.get("OTEL_METRICS_EXPORTER", "none").strip().lower()
    if name in ("", "none"):
        return []
    if name == "console":
        return [PeriodicExportingMetricReader(ConsoleMetricExporter())]
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return [PeriodicExportingMetricReader(OTLPMetricExporter())]
    if name == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0")
        port = env_port(env, "OTEL_EXPORTER_PROMETHEUS_PORT", 9464)
        start_http_server(port=port, addr=host)
        return [PrometheusMetricReader()]
    raise ConfigError(
        f"OTEL_METRICS_EXPORTER must be none, console, otlp or prometheus; got {name!r}"
    )


@dataclass(frozen=True)
class KafkaClient:
    """A Kafka client as its spans name it: its client id, its consumer group (consumers) and
    the broker it bootstraps from."""

    client_id: str
    bootstrap_servers: str
    group: str | None = None

    def attributes(self) -> dict[str, str | int]:
        first = self.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        attributes: dict[str, str | int] = {"messaging.client.id": self.client_id}
        if host and port.isdigit():
            attributes["server.address"] = host
            attributes["server.port"] = int(port)
        elif first:
            attributes["server.address"] = first
        if self.group:
            attributes["messaging.consumer.group.name"] = self.group
        return attributes


def messaging_attributes(
    operation: str,
    topic: str,
    count: int,
    client: KafkaClient | None = None,
    partition: int | None = None,
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.batch.message_count": count,
    }
    if client is not None:
        attributes.update(client.attributes())
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    return attributes


def producer_span(
    tracer: trace.Tracer, topic: str, count: int, client: KafkaClient | None = None
) -> trace.Span:
    """A PRODUCER span for sending a batch to `topic`; use it as a context manager."""
    return tracer.start_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes=messaging_attributes("send", topic, count, client),
    )


@contextmanager
def producing(
    tracer: trace.Tracer, topic: str, count: int, client: KafkaClient | None = None
) -> Iterator[list[tuple[str, bytes]]]:
    """A current PRODUCER span for sending to `topic`, one per destination; yields the Kafka
    headers that carry its context, for the records sent inside the block."""
    with trace.use_span(producer_span(tracer, topic, count, client), end_on_exit=True):
        yield inject_headers()


def inject_headers() -> list[tuple[str, bytes]]:
    """Kafka headers carrying the current trace context (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode("ascii")) for key, value in carrier.items()]


def links_from_headers(batch_headers: Iterable[KafkaHeaders | None]) -> list[Link]:
    """Links to the distinct producing spans of a batch of consumed messages, in order."""
    seen: set[bytes] = set()
    links: list[Link] = []
    for headers in batch_headers:
        if not headers:
            continue
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for key, value in pairs:
            if key == "traceparent" and value not in seen:
                seen.add(value)
                context = propagate.extract({"traceparent": value.decode("ascii", "replace")})
                span_context = trace.get_current_span(context).get_span_context()
                if span_context.is_valid:
                    links.append(Link(span_context))
    return links


def consumer_span(
    tracer: trace.Tracer,
    topic: str,
    count: int,
    links: list[Link],
    client: KafkaClient | None = None,
    partitions: Iterable[int] = (),
) -> trace.Span:
    """A CONSUMER span for processing a batch from `topic`, linked to its producers.

    It continues the trace of the batch's first producer (so a gateway's trace goes on
    through ingest, Kafka, the processor and the sink) and links to every producer. The
    partition is named when the whole batch came from one."""
    distinct = set(partitions)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(links[0].context)) if links else None
    return tracer.start_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=messaging_attributes(
            "process", topic, count, client, distinct.pop() if len(distinct) == 1 else None
        ),
    )
