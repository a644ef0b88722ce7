"""OpenTelemetry set up once per process from the standard OTEL_* variables.

OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "none" (the default), "console" or "otlp"
(metrics also "prometheus", served on OTEL_EXPORTER_PROMETHEUS_HOST:PORT, default :9464).
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the process; OTEL_SDK_DISABLED=true
turns everything off. OTLP endpoints come from OTEL_EXPORTER_OTLP_* as the exporter reads them.

HTTP and gRPC servers are traced by OpenTelemetry's instrumentations, which continue a
caller's `traceparent` (instrument_http_servers here, core/grpc_server.py for gRPC).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import metrics, trace
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

from civicmeter.core.config import ConfigError, env_port

_configured = False


@dataclass(frozen=True)
class Telemetry:
    tracer: trace.Tracer
    meter: metrics.Meter


def setup_telemetry(service_name: str, env: Mapping[str, str]) -> Telemetry:
    """Install the global tracer and meter providers (once per process) and return handles."""
    global _configured
    if not _configured and env.get("OTEL_SDK_DISABLED", "").lower() != "true":
        # Settings first: a bad one (ConfigError) leaves no global provider installed.
        readers = _metric_readers(env)
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
