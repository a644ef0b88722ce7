"""The notifier against a webhook receiver on loopback and the embedded ClickHouse engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.core.config import ClickHouseSettings, NotifierSettings
from civicmeter.core.store.connection import Storage
from civicmeter.notifier.service import serve
from civicmeter.policy.organization import parse_policies
from civicmeter.sink.alert_writer import write_alerts
from tests.core.test_alert_store import alert
from tests.telemetry.memory import MemoryTelemetry


class Receiver:
    """A Slack-like incoming webhook that fails its first `failures` calls with 503."""

    def __init__(self, failures: int, status: int = 503) -> None:
        self.failures = failures
        self.status = status
        self.calls = 0
        self.messages: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return web.Response(status=self.status)
        self.messages.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[str, Receiver, Receiver]]:
    flaky, broken = Receiver(failures=2), Receiver(failures=10**6, status=400)
    app = web.Application()
    app.router.add_post("/flaky", flaky.handle)
    app.router.add_post("/broken", broken.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", flaky, broken
    await runner.cleanup()


async def test_alerts_reach_their_webhooks_with_retries_and_every_outcome_is_recorded(
    clickhouse: Client, receivers: tuple[str, Receiver, Receiver]
) -> None:
    base, flaky, broken = receivers
    policies = parse_policies({
        "version": "test",
        "defaults": {"alerts": {"webhooks": {
            "high": [f"{base}/flaky", {"env": "SECURITY_WEBHOOK"}],
            "low": [f"{base}/broken"],
        }}},
    })  # fmt: skip
    settings = NotifierSettings(ClickHouseSettings(), poll_seconds=0.05, retry_base_seconds=0.01)
    storage = Storage(clickhouse)
    stop = asyncio.Event()
    memory = MemoryTelemetry()
    task = asyncio.create_task(serve(settings, storage, policies, memory.telemetry, {}, stop))
    await asyncio.sleep(0.3)  # the first start delivers only what opens from then on
    write_alerts(
        clickhouse,
        [
            alert("k-high", "e1"),
            alert("k-low", "e2", severity=alert_pb2.SEVERITY_LOW),
            alert("k-high", "e3", 1),
            alert("k-medium", "e4", severity=alert_pb2.SEVERITY_MEDIUM),  # routed nowhere
        ],
        time.time_ns() // 10**6,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not flaky.messages or broken.calls == 0):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 10)

    assert len(flaky.messages) == 1  # the repeat folded: one message per alert
    message = flaky.messages[0]
    assert message["text"].startswith("*[HIGH] banned_provider* in seoul: ")
    assert "DeepSeek" in message["text"]
    assert broken.calls == 1  # a 400 is not retried
    outcomes = sorted(
        tuple(row)
        for row in clickhouse.query(
            "SELECT dedup_key, target, status, attempts FROM alert_deliveries"
        ).result_rows
    )
    assert outcomes == [
        ("k-high", "SECURITY_WEBHOOK", "no_route", 0),
        ("k-high", "route-0", "delivered", 3),
        ("k-low", "route-0", "failed", 1),
    ]
    # One delivery per route by outcome; the 400 is a rejection, the unrouted alert no delivery.
    assert memory.sums("civicmeter.notifier.deliveries", "outcome") == {
        "delivered": 1,
        "no_route": 2,
        "rejected": 1,
    }
    # Every HTTP attempt is timed, with its status: 503, 503, 200 to one route, 400 to the other.
    requests = memory.points("http.client.request.duration")
    statuses = {p.attributes["http.response.status_code"]: p.count for p in requests}
    assert statuses == {503: 2, 200: 1, 400: 1}
    assert {p.attributes["server.address"] for p in requests} == {"127.0.0.1"}


async def test_a_restarted_notifier_neither_repeats_nor_skips(
    clickhouse: Client, receivers: tuple[str, Receiver, Receiver]
) -> None:
    base, receiver, _ = receivers
    receiver.failures = 0
    policies = parse_policies(
        {"version": "t", "defaults": {"alerts": {"webhooks": {"high": [f"{base}/flaky"]}}}}
    )
    settings = NotifierSettings(ClickHouseSettings(), poll_seconds=0.05, retry_base_seconds=0.01)
    storage = Storage(clickhouse)

    async def run_until(delivered: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(settings, storage, policies, MemoryTelemetry().telemetry, {}, stop)
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.messages) < delivered:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    await run_until(0)  # first start: the cursor is set to now
    write_alerts(clickhouse, [alert("a", "e1")], time.time_ns() // 10**6)
    await run_until(1)
    write_alerts(clickhouse, [alert("b", "e2")], time.time_ns() // 10**6)
    await run_until(2)
    assert [m["attachments"][0]["fields"][-1]["value"] for m in receiver.messages] == ["a", "b"]


async def test_alerts_routed_to_no_webhook_are_recorded_once_with_few_cursor_writes(
    clickhouse: Client,
) -> None:
    # A route whose webhook URL is not configured: no alert leaves the process.
    policies = parse_policies(
        {"version": "t", "defaults": {"alerts": {"webhooks": {"high": [{"env": "UNSET_HOOK"}]}}}}
    )
    settings = NotifierSettings(ClickHouseSettings(), poll_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings, Storage(clickhouse), policies, MemoryTelemetry().telemetry, {}, stop)
    )
    await asyncio.sleep(0.3)  # the first start delivers only what opens from then on
    keys = [f"k{n:02d}" for n in range(40)]
    write_alerts(
        clickhouse, [alert(k, f"e{k}", n) for n, k in enumerate(keys)], time.time_ns() // 10**6
    )

    def recorded() -> list[str]:
        rows = clickhouse.query("SELECT dedup_key FROM alert_deliveries ORDER BY dedup_key")
        return [str(row[0]) for row in rows.result_rows]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(recorded()) < len(keys):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 10)

    assert recorded() == keys  # each once, as no_route
    statuses = clickhouse.query("SELECT DISTINCT status FROM alert_deliveries").result_rows
    assert statuses == [("no_route",)]
    cursor = clickhouse.query("SELECT dedup_key FROM notifier_cursor FINAL").result_rows
    assert cursor == [(keys[-1],)]
    # The cursor is written at the first start and once per batch read, not once per alert.
    saves = clickhouse.query("SELECT count() FROM notifier_cursor").result_rows[0][0]
    assert saves <= 3
