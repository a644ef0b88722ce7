"""The contract's instruments as Prometheus exposes them: the names and labels the chart's
dashboards and alert rules are written against, with buckets in seconds."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest

from civicmeter.core.config import KafkaSettings
from civicmeter.core.telemetry.consumer_lag import ConsumerLag
from civicmeter.core.telemetry.metrics import (
    ProcessorLatency,
    SinkMetrics,
    consumed_attributes,
    db_operation_duration,
    http_client_duration,
    process_duration,
    rpc_server_duration,
)
from civicmeter.notifier.service import DeliveryMetrics


@pytest.fixture
def exposition() -> Iterator[tuple[MeterProvider, PrometheusMetricReader]]:
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()  # unregisters the reader's collector


def test_the_instruments_have_the_contracts_prometheus_names(
    exposition: tuple[MeterProvider, PrometheusMetricReader],
) -> None:
    provider, _ = exposition
    meter = provider.get_meter("contract")
    rpc = {"rpc.system": "grpc", "rpc.method": "/m", "rpc.grpc.status_code": "OK"}
    rpc_server_duration(meter).record(0.003, rpc)
    process_duration(meter).record(0.2, consumed_attributes("usage.raw", "civicmeter-processor"))
    db = {"db.system.name": "clickhouse", "db.operation.name": "select"}
    db_operation_duration(meter).record(0.01, db)
    http_client_duration(meter).record(0.1, {"http.request.method": "POST"})
    ProcessorLatency(meter).record([1.0], [2.0], 3.0)
    SinkMetrics(meter).stored(10, 0.05, [1000], 2.0)
    DeliveryMetrics(meter).count("no_route")
    lag = ConsumerLag(KafkaSettings(), meter, {"civicmeter-sink": ["usage.rated"]})
    lag.lag = {("civicmeter-sink", "usage.rated", 3): 42}

    text = generate_latest(REGISTRY).decode()
    for name in (
        "rpc_server_call_duration_seconds_bucket",
        "messaging_process_duration_seconds_bucket",
        "civicmeter_processor_event_latency_seconds_bucket",
        "civicmeter_sink_event_latency_seconds_bucket",
        "civicmeter_sink_write_duration_seconds_bucket",
        "civicmeter_sink_batch_size_bucket",
        "db_client_operation_duration_seconds_bucket",
        "http_client_request_duration_seconds_bucket",
        "civicmeter_notifier_deliveries_total",
        "civicmeter_kafka_consumer_lag",
    ):
        assert f"\n{name}{{" in text, name
    assert 'rpc_method="/m"' in text and 'rpc_grpc_status_code="OK"' in text
    assert 'civicmeter_latency_since="event_time"' in text
    assert re.search(
        r'\ncivicmeter_kafka_consumer_lag\{messaging_consumer_group_name="civicmeter-sink",'
        r'messaging_destination_name="usage\.rated",messaging_destination_partition_id="3"'
        r"[^}]*\} 42\.0\n",
        text,
    )
    # Seconds, not the SDK's default (millisecond-sized) boundaries.
    assert 'rpc_server_call_duration_seconds_bucket{le="0.005"' in text
    assert 'rpc_server_call_duration_seconds_bucket{le="10000.0"' not in text
