"""Telemetry kept in memory: the SDK's in-memory metric reader and span exporter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from civicmeter.core.telemetry.setup import Telemetry


@dataclass
class Recorded:
    """Metrics and spans kept in memory, to read back."""

    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def points(self, name: str) -> list[Any]:
        """The data points of instrument `name` collected now (none if never recorded)."""
        return metric_points(self.reader, name)

    def sums(self, name: str, attribute: str) -> dict[str, int]:
        """A counter's values by one attribute."""
        return {str(p.attributes[attribute]): int(p.value) for p in self.points(name)}

    def spans(self, name: str) -> Sequence[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


@dataclass
class MemoryTelemetry(Recorded):
    """A Telemetry whose metrics and spans a test reads back (no global provider involved)."""

    def __post_init__(self) -> None:
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = Telemetry(
            self.tracer_provider.get_tracer("test"), self.meter_provider.get_meter("test")
        )
