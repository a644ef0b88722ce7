"""The histograms of civicmeter's metric contract, made once per meter.

Names, units and attributes are fixed (OpenTelemetry semantic conventions where one exists):
dashboards and alert rules are written against them. The Prometheus exporter turns
`a.b.c` in seconds into `a_b_c_seconds`. Bucket boundaries are given as advice to the SDK,
so a view can still override them.

Observations are per batch or per Kafka record, never per event: recording a histogram
costs microseconds, as much as rating an event.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError
from opentelemetry import metrics

from civicmeter.api.usage.v1 import usage_event_pb2 as pb

# Request-scale durations (the semantic conventions' advice for HTTP and RPC).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
# End-to-end latencies: from seconds when the pipeline keeps up to hours for late events.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
    86400.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)

# Kafka header of usage.rated records: the earliest ingest accept time (epoch milliseconds)
# of the usage.raw records they were rated from, so the sink can measure freshness.
ACCEPT_TIME_HEADER = "civicmeter-accept-time-ms"
_EVENTS_KEY = pb.UsageEventBatch.EVENTS_FIELD_NUMBER << 3 | 2  # a length-delimited field


def seconds_histogram(
    meter: metrics.Meter,
    name: str,
    description: str,
    buckets: tuple[float, ...] = DURATION_BUCKETS,
) -> metrics.Histogram:
    return meter.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
    )


def rpc_server_duration(meter: metrics.Meter) -> metrics.Histogram:
    return seconds_histogram(
        meter, "rpc.server.call.duration", "Duration of gRPC calls served, by method and status"
    )


def db_operation_duration(meter: metrics.Meter) -> metrics.Histogram:
    return seconds_histogram(
        meter, "db.client.operation.duration", "Duration of ClickHouse operations"
    )


def http_client_duration(meter: metrics.Meter) -> metrics.Histogram:
    return seconds_histogram(
        meter, "http.client.request.duration", "Duration of webhook deliveries' HTTP requests"
    )


def process_duration(meter: metrics.Meter) -> metrics.Histogram:
    return seconds_histogram(
        meter, "messaging.process.duration", "Duration of processing a batch of Kafka records"
    )


def consumed_attributes(topic: str, group: str) -> dict[str, str]:
    """The attributes of messaging.process.duration for a consumer group's batches."""
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
    }


class ProcessorLatency:
    """civicmeter.processor.event.latency: how long after its event time, and after ingest
    accepted it, an event was rated.

    One observation per usage.raw record (the events of one accepted request that share a
    partition): its accept time is the record's Kafka timestamp, which ingest's producer
    stamps as it accepts the request, and its event time that of its first event."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._latency = seconds_histogram(
            meter,
            "civicmeter.processor.event.latency",
            "Time from an event's event time or ingest accept time to rated",
            LATENCY_BUCKETS,
        )
        self._since_accept = {"civicmeter.latency.since": "accept_time"}
        self._since_event = {"civicmeter.latency.since": "event_time"}

    def record(
        self,
        accept_times: Iterable[float | None],
        event_times: Iterable[float | None],
        rated: float,
    ) -> None:
        """Record latencies up to `rated` (epoch seconds, as are the times given; None for a
        record without one)."""
        for since, times in ((self._since_accept, accept_times), (self._since_event, event_times)):
            for moment in times:
                if moment is not None:
                    self._latency.record(max(rated - moment, 0.0), since)


class SinkMetrics:
    """The sink's histograms: a stored block's write duration and size, and freshness."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._write = seconds_histogram(
            meter,
            "civicmeter.sink.write.duration",
            "Duration of storing one block of rated events (ledger and rollups)",
        )
        self._size = meter.create_histogram(
            "civicmeter.sink.batch.size",
            unit="{event}",
            description="Rated events per stored block",
            explicit_bucket_boundaries_advisory=BATCH_SIZE_BUCKETS,
        )
        self._latency = seconds_histogram(
            meter,
            "civicmeter.sink.event.latency",
            "Time from ingest accepting events to their being stored (freshness)",
            LATENCY_BUCKETS,
        )

    def stored(
        self, events: int, seconds: float, accept_times_ms: Iterable[int | None], stored: float
    ) -> None:
        """A block of `events` written in `seconds` (retries included); its records' accept
        times (epoch milliseconds, from ACCEPT_TIME_HEADER; None for a record without one),
        stored at `stored` (epoch seconds). One freshness observation per record."""
        if events:
            self._write.record(seconds)
            self._size.record(events)
        for accepted in accept_times_ms:
            if accepted is not None:
                self._latency.record(max(stored - accepted / 1000, 0.0))


def accept_time_header(accept_times: Iterable[float | None]) -> list[tuple[str, bytes]]:
    """The ACCEPT_TIME_HEADER of records rated from usage.raw records accepted at
    `accept_times` (epoch seconds): the earliest, so freshness is never understated."""
    known = [t for t in accept_times if t is not None]
    return [(ACCEPT_TIME_HEADER, str(int(min(known) * 1000)).encode())] if known else []


def accept_time_ms(headers: Iterable[tuple[str, bytes]] | None) -> int | None:
    """The ACCEPT_TIME_HEADER of a consumed record, if it has a valid one."""
    for key, value in headers or ():
        if key == ACCEPT_TIME_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def first_event_time(record: bytes | None) -> float | None:
    """The event time (epoch seconds) of the first event of a UsageEventBatch record, read
    without decoding the others; None when the record does not start with an event."""
    if not record or record[0] != _EVENTS_KEY:
        return None
    size, shift, position = 0, 0, 1
    while position < len(record):
        byte = record[position]
        size |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            break
        shift += 7
    try:
        event = pb.UsageEvent.FromString(record[position : position + size])
    except DecodeError:
        return None
    stamp = event.event_time
    return stamp.seconds + stamp.nanos / 1e9 if stamp.seconds else None
