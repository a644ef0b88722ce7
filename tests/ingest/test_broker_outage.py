"""A broker outage gets a clear answer to retry (503 with Retry-After / UNAVAILABLE), never a
500 or UNKNOWN, and ingest serves again once the broker is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry import metrics, trace

from civicmeter.core.config import IngestSettings, KafkaSettings, TopicSettings
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.ingest.service import serve
from loadtests.stack import free_port
from tests.ingest.test_auth import _listening, now_event, post, publish_grpc
from tools.localkafka import LocalKafka

pytestmark = [pytest.mark.kafka]


async def test_an_unreachable_broker_is_answered_with_retry_later(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "kafka", num_partitions=2).start()
    settings = IngestSettings(
        KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers, topics=TopicSettings(partitions=2)
        ),
        http_port=free_port(),
        grpc_port=free_port(),
        linger_ms=0,
        publish_timeout_seconds=3.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings, Telemetry(trace.get_tracer("test"), metrics.get_meter("test")), stop)
    )
    url = f"http://127.0.0.1:{settings.http_port}/v1/events"
    try:
        deadline = time.monotonic() + 60
        while not _listening(settings.http_port):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "ingest did not start"
            await asyncio.sleep(0.1)
        status, _, _ = await post(url, [now_event()])
        assert status == 202

        broker.stop()
        started = time.monotonic()
        status, body, headers = await post(url, [now_event()])
        assert status == 503, body
        assert headers["Retry-After"] == "5"
        assert body["error"] == "Kafka is unavailable; retry the batch"
        assert time.monotonic() - started < 15
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await publish_grpc(f"127.0.0.1:{settings.grpc_port}", [now_event()])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not task.done()

        # The broker back on its port and data: ingest accepts again, without a restart.
        broker = LocalKafka(
            tmp_path / "kafka",
            port=broker.port,
            controller_port=broker.controller_port,
            num_partitions=2,
        ).start()
        deadline = time.monotonic() + 90
        while (status := (await post(url, [now_event()]))[0]) != 202:
            assert status == 503
            assert time.monotonic() < deadline, "ingest did not recover from the outage"
            await asyncio.sleep(1)
    finally:
        stop.set()
        await task
        broker.stop()
