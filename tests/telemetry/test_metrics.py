"""The contract's latency histograms: what the processor and the sink observe, and the accept
time the processor passes on to the sink."""

from __future__ import annotations

from datetime import UTC, datetime

from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.telemetry.metrics import (
    ACCEPT_TIME_HEADER,
    ProcessorLatency,
    SinkMetrics,
    accept_time_header,
    accept_time_ms,
    first_event_time,
)
from tests.factories import event
from tests.telemetry.memory import MemoryTelemetry


def test_the_first_events_time_is_read_from_a_batch_record() -> None:
    first = datetime(2025, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)
    record = encode_event_batch([event(event_time=first), event(event_id="x" * 200)])
    assert first_event_time(record) == first.timestamp()
    assert first_event_time(b"") is None
    assert first_event_time(None) is None
    assert first_event_time(b"\x12\x01x") is None  # not a batch of events
    assert first_event_time(b"\x0a\x05\xff\xff\xff\xff\xff") is None  # undecodable


def test_the_accept_time_passed_on_is_the_earliest() -> None:
    header = accept_time_header([1_700_000_002.5, None, 1_700_000_001.25])
    assert header == [(ACCEPT_TIME_HEADER, b"1700000001250")]
    assert accept_time_ms(header) == 1_700_000_001_250
    assert accept_time_header([None]) == []
    assert accept_time_ms([("traceparent", b"00-x"), (ACCEPT_TIME_HEADER, b"soon")]) is None
    assert accept_time_ms(None) is None


def test_processor_latency_is_observed_per_record_since_accept_and_event_time() -> None:
    memory = MemoryTelemetry()
    ProcessorLatency(memory.telemetry.meter).record([100.0, 99.0, None], [40.0, None], 101.0)
    points = {
        p.attributes["civicmeter.latency.since"]: (p.count, p.sum)
        for p in memory.points("civicmeter.processor.event.latency")
    }
    assert points == {"accept_time": (2, 3.0), "event_time": (1, 61.0)}


def test_the_sink_observes_a_block_and_the_freshness_of_its_records() -> None:
    memory = MemoryTelemetry()
    metrics = SinkMetrics(memory.telemetry.meter)
    metrics.stored(250, 0.4, [10_000, None, 10_500], 12.0)
    metrics.stored(0, 0.1, [], 13.0)  # alerts only: no block of events
    [write] = memory.points("civicmeter.sink.write.duration")
    [size] = memory.points("civicmeter.sink.batch.size")
    [freshness] = memory.points("civicmeter.sink.event.latency")
    assert (write.count, write.sum) == (1, 0.4)
    assert (size.count, size.sum) == (1, 250)
    assert (freshness.count, freshness.sum) == (2, 3.5)
