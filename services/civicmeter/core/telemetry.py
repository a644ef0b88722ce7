"""OpenTelemetry set up once per process from the standard OTEL_* variables.

OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "none" (the default), "console" or "otlp"
(metrics also "prometheus", served on OTEL_EXPORTER_PROMETHEUS_HOST:PORT, default :9464).
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the process; OTEL_SDK_DISABLED=true
turns everything off. OTLP endpoints come from OTEL_EXPORTER_OTLP_* as the exporter reads them.

Kafka spans follow the messaging semantic conventions. One span covers a batch, not an event
(a span per event would cost more than the event itself); the trace context of the span that
produced a message rides in its `traceparent` header, and the span that processes a batch links
to the producing spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import metrics, propagate, trace
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

from civicmeter.core.config import ConfigError

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
        _configured = True
    return Telemetry(
        trace.get_tracer(f"civicmeter.{service_name}"),
        metrics.get_meter(f"civicmeter.{service_name}"),
    )


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
        port = int(env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
        start_http_server(port=port, addr=host)
        return [PrometheusMetricReader()]
    raise ConfigError(
        f"OTEL_METRICS_EXPORTER must be none, console, otlp or prometheus; got {name!r}"
    )


def messaging_attributes(operation: str, topic: str, count: int) -> dict[str, str | int]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.batch.message_count": count,
    }


def producer_span(tracer: trace.Tracer, topic: str, count: int) -> trace.Span:
    """A PRODUCER span for sending a batch to `topic`; use it as a context manager."""
    return tracer.start_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes=messaging_attributes("send", topic, count),
    )


def inject_headers() -> list[tuple[str, bytes]]:
    """Kafka headers carrying the current trace context (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode("ascii")) for key, value in carrier.items()]


def links_from_headers(batch_headers: Iterable[KafkaHeaders | None]) -> list[Link]:
    """Links to the distinct producing spans of a batch of consumed messages."""
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


def consumer_span(tracer: trace.Tracer, topic: str, count: int, links: list[Link]) -> trace.Span:
    """A CONSUMER span for processing a batch from `topic`, linked to its producers."""
    return tracer.start_span(
        f"process {topic}",
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=messaging_attributes("process", topic, count),
    )
