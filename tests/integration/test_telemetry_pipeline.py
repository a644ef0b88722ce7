"""The services' telemetry, each service in its own process on the real broker: a gateway's
`traceparent` continues to the sink's span, and every histogram of the metric contract is
exported (console exporters, read from the service logs)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from civicmeter.api.event_json import encode_batch
from loadtests.stack import LocalStack, free_port
from tests.factories import event
from tests.integration.conftest import read_log

pytestmark = pytest.mark.kafka
CONTRACT = (
    "http.server.request.duration",
    "rpc.server.call.duration",
    "messaging.process.duration",
    "civicmeter.processor.event.latency",
    "civicmeter.sink.event.latency",
    "civicmeter.sink.write.duration",
    "civicmeter.sink.batch.size",
    "db.client.operation.duration",
    "http.client.request.duration",
    "civicmeter.notifier.deliveries",
    "civicmeter.kafka.consumer.lag",
)
WEBHOOK_PORT = free_port()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("telemetry-stack")
    run = uuid.uuid4().hex[:8]
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": "200",
        "CIVICMETER_WEBHOOK_SECURITY": f"http://127.0.0.1:{WEBHOOK_PORT}/hook",
        # Topics and groups of its own: the suite's other stacks share the broker.
        "CIVICMETER_TOPIC_RAW": f"telemetry-{run}.raw",
        "CIVICMETER_TOPIC_RATED": f"telemetry-{run}.rated",
        "CIVICMETER_TOPIC_DLQ": f"telemetry-{run}.dlq",
        "CIVICMETER_TOPIC_ALERTS": f"telemetry-{run}.alerts",
        "CIVICMETER_PROCESSOR_GROUP_ID": f"telemetry-{run}-processor",
        "CIVICMETER_SINK_GROUP_ID": f"telemetry-{run}-sink",
    }
    with LocalStack(kafka_bootstrap, workdir, extra_env=env) as running:
        yield running


def logged_json(log: str, start: str) -> list[dict[str, Any]]:
    """The JSON objects a console exporter printed into a log, each opening with `start`."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^\{\s*\n\s*" + re.escape(start), log, re.M):
        try:
            found.append(decoder.raw_decode(log, match.start())[0])
        except json.JSONDecodeError:
            continue  # cut off by the end of what has been written so far
    return found


def spans(stack: LocalStack, service: str) -> list[dict[str, Any]]:
    return logged_json(read_log(stack, service), '"name":')


def metric_names(stack: LocalStack, service: str) -> set[str]:
    names: set[str] = set()
    for data in logged_json(read_log(stack, service), '"resource_metrics":'):
        for resource in data["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                names |= {m["name"] for m in scope["metrics"] if m["data"]["data_points"]}
    return names


async def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll until `check()`; the loop stays free for the webhook receiver meanwhile."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.25)


async def test_a_gateways_trace_reaches_the_sink_and_every_histogram_is_exported(
    stack: LocalStack,
) -> None:
    hook_calls: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hook_calls.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", WEBHOOK_PORT).start()
    trace_id, gateway_span = secrets.token_hex(16), secrets.token_hex(8)
    recent = datetime.now(UTC) - timedelta(minutes=1)
    try:
        async with aiohttp.ClientSession() as session:
            for events, headers in (
                ([event(event_time=recent)], {"traceparent": f"00-{trace_id}-{gateway_span}-01"}),
                # DeepSeek is banned: a high alert, delivered to the security webhook.
                ([event(event_time=recent, provider_name="deepseek", service_id="deepseek-chat")],
                 {}),
            ):  # fmt: skip
                async with session.post(
                    f"{stack.ingest_url}/v1/events",
                    data=encode_batch(events),
                    headers={
                        "Content-Type": "application/cloudevents-batch+json",
                        **stack.ingest_headers,
                        **headers,
                    },
                ) as response:
                    assert response.status == 202, await response.text()

        rated_topic = stack.env()["CIVICMETER_TOPIC_RATED"]

        def in_trace(service: str, name: str) -> list[dict[str, Any]]:
            return [
                s for s in spans(stack, service)
                if s["name"] == name and s["context"]["trace_id"] == f"0x{trace_id}"
            ]  # fmt: skip

        await eventually(
            lambda: bool(in_trace("storage", f"process {rated_topic}")), "the sink's span"
        )
        [server] = in_trace("ingest", "POST /v1/events")
        assert server["kind"] == "SpanKind.SERVER"
        assert server["parent_id"] == f"0x{gateway_span}"
        [sink] = in_trace("storage", f"process {rated_topic}")
        assert sink["attributes"]["messaging.consumer.group.name"].endswith("-sink")
        [processing] = in_trace("processor", f"process {stack.env()['CIVICMETER_TOPIC_RAW']}")
        [rated_send] = in_trace("processor", f"send {rated_topic}")
        assert rated_send["parent_id"] == processing["context"]["span_id"]
        assert sink["parent_id"] == rated_send["context"]["span_id"]

        await eventually(lambda: bool(hook_calls), "the alert's webhook delivery")
        services = ("ingest", "processor", "storage")

        def missing() -> set[str]:
            exported = set().union(*(metric_names(stack, s) for s in services))
            return set(CONTRACT) - exported

        await eventually(lambda: not missing(), f"every histogram of the contract: {missing()}", 15)
        assert "http.server.request.duration" in metric_names(stack, "ingest")
        assert {"messaging.process.duration", "civicmeter.processor.event.latency"} <= (
            metric_names(stack, "processor")
        )
    finally:
        await runner.cleanup()
