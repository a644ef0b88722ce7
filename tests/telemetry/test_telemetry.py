"""Kafka spans: one producer span per destination, whose context its records carry, and a
processing span that continues the first producer's trace and names group and partition."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from civicmeter.core.telemetry.kafka_spans import (
    KafkaClient,
    consumer_span,
    links_from_headers,
    producing,
)
from tests.telemetry.memory import MemoryTelemetry

SINK = KafkaClient("civicmeter-sink", "kafka-0.kafka:9092,kafka-1.kafka:9092", "civicmeter-sink")


def test_each_destination_gets_its_own_span_and_context() -> None:
    memory = MemoryTelemetry()
    tracer = memory.telemetry.tracer
    sender = KafkaClient("civicmeter-processor", "kafka-0.kafka:9092")
    with tracer.start_as_current_span("process usage.raw"):
        with producing(tracer, "usage.rated", 3, sender) as rated_headers:
            pass
        with producing(tracer, "usage.alerts", 1, sender) as alert_headers:
            pass
    rated, alerts = memory.spans("send usage.rated")[0], memory.spans("send usage.alerts")[0]
    assert rated.context.span_id != alerts.context.span_id
    assert rated.kind == SpanKind.PRODUCER
    assert dict(rated.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "usage.rated",
        "messaging.batch.message_count": 3,
        "messaging.client.id": "civicmeter-processor",
        "server.address": "kafka-0.kafka",
        "server.port": 9092,
    }
    # Each destination's records carry their own span's context.
    assert [link.context.span_id for link in links_from_headers([rated_headers])] == [
        rated.context.span_id
    ]
    assert [link.context.span_id for link in links_from_headers([alert_headers])] == [
        alerts.context.span_id
    ]


def test_processing_continues_the_first_producers_trace_and_links_every_producer() -> None:
    memory = MemoryTelemetry()
    tracer = memory.telemetry.tracer
    contexts = []
    for name in ("gateway a", "gateway b"):
        with tracer.start_as_current_span(name), producing(tracer, "usage.raw", 1) as headers:
            contexts.append(headers)
    links = links_from_headers(contexts * 2)  # repeated producers are linked once
    assert len(links) == 2
    with trace.use_span(
        consumer_span(tracer, "usage.rated", 4, links, SINK, [1, 1, 1]), end_on_exit=True
    ):
        pass
    with trace.use_span(
        consumer_span(tracer, "usage.rated", 4, links, SINK, [0, 1]), end_on_exit=True
    ):
        pass
    one_partition, two_partitions = memory.spans("process usage.rated")
    first_send = memory.spans("send usage.raw")[0]
    assert one_partition.kind == SpanKind.CONSUMER
    assert one_partition.context.trace_id == first_send.context.trace_id
    assert one_partition.parent is not None
    assert one_partition.parent.span_id == first_send.context.span_id
    assert [link.context for link in one_partition.links] == [link.context for link in links]
    attributes = dict(one_partition.attributes or {})
    assert attributes["messaging.consumer.group.name"] == "civicmeter-sink"
    assert attributes["messaging.destination.partition.id"] == "1"
    assert attributes["messaging.client.id"] == "civicmeter-sink"
    assert "messaging.destination.partition.id" not in (two_partitions.attributes or {})


def test_a_batch_without_trace_context_starts_its_own_trace() -> None:
    memory = MemoryTelemetry()
    with trace.use_span(
        consumer_span(memory.telemetry.tracer, "usage.raw", 1, []), end_on_exit=True
    ):
        pass
    [span] = memory.spans("process usage.raw")
    assert span.parent is None
