"""Kafka spans, after the messaging semantic conventions.

One span covers a batch, not an event (a span per event would cost more than the event itself);
the trace context of the span that produced a message rides in its `traceparent` header, one
producer span per destination topic. The span that processes a batch continues the trace of
its first record's producer and links to every producer of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind

# aiokafka gives headers as a sequence of pairs; faust may give a mapping.
KafkaHeaders = Sequence[tuple[str, bytes]] | Mapping[str, bytes]


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
