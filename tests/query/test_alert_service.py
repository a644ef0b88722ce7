"""AlertService over a real gRPC channel, on the embedded ClickHouse engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.core.access.auth import OPEN_ACCESS
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AccessInterceptor
from civicmeter.query.alert_service import AlertService
from civicmeter.sink.alert_writer import write_alerts
from tests.core.test_alert_store import alert


@pytest.fixture
async def stub(clickhouse: Client) -> AsyncIterator[alert_service_pb2_grpc.AlertServiceStub]:
    server = grpc.aio.server(interceptors=[AccessInterceptor(None, None)])  # open access
    alert_service_pb2_grpc.add_AlertServiceServicer_to_server(
        AlertService(Storage(clickhouse), poll_seconds=0.05), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield alert_service_pb2_grpc.AlertServiceStub(channel)
    await server.stop(None)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_list_pages_through_every_alert_once(
    clickhouse: Client, stub: alert_service_pb2_grpc.AlertServiceStub
) -> None:
    write_alerts(clickhouse, [alert(f"k{i:02d}", f"e{i}", i) for i in range(7)], now_ms())
    keys: list[str] = []
    token = ""
    while True:
        page = await stub.ListAlerts(
            alert_service_pb2.ListAlertsRequest(
                filter=alert_service_pb2.AlertFilter(organization_id="seoul"),
                page_size=3,
                page_token=token,
            )
        )
        keys += [a.dedup_key for a in page.alerts]
        token = page.next_page_token
        if not token:
            break
    whole = await stub.ListAlerts(
        alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id="seoul")
        )
    )
    assert keys == [a.dedup_key for a in whole.alerts]
    assert sorted(keys) == [f"k{i:02d}" for i in range(7)]


async def test_acknowledge_errors_name_the_field_or_say_not_found(
    clickhouse: Client, stub: alert_service_pb2_grpc.AlertServiceStub
) -> None:
    write_alerts(clickhouse, [alert("k", "e1")], now_ms())
    with pytest.raises(grpc.aio.AioRpcError) as missing_key:
        await stub.AcknowledgeAlert(
            alert_service_pb2.AcknowledgeAlertRequest(organization_id="seoul")
        )
    assert missing_key.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (missing_key.value.details() or "").startswith("dedup_key")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.AcknowledgeAlert(
            alert_service_pb2.AcknowledgeAlertRequest(organization_id="busan", dedup_key="k")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # The actor is the caller's credential (here the open-access principal), whatever the
    # request says.
    done = await stub.AcknowledgeAlert(
        alert_service_pb2.AcknowledgeAlertRequest(
            organization_id="seoul", dedup_key="k", actor="the-director-himself"
        )
    )
    assert done.alert.state == alert_pb2.ALERT_STATE_ACKNOWLEDGED
    assert done.alert.state_changed_by == OPEN_ACCESS.key_id


async def test_watch_streams_new_alerts_filtered_and_resumes_from_its_cursor(
    clickhouse: Client, stub: alert_service_pb2_grpc.AlertServiceStub
) -> None:
    request = alert_service_pb2.WatchAlertsRequest(
        filter=alert_service_pb2.AlertFilter(
            organization_id="seoul", min_severity=alert_pb2.SEVERITY_MEDIUM
        )
    )
    call = stub.WatchAlerts(request)
    await asyncio.sleep(0.2)
    write_alerts(
        clickhouse,
        [
            alert("low", "e1", severity=alert_pb2.SEVERITY_LOW),
            alert("high", "e2"),
            alert("other-org", "e3", org="busan"),
            alert("high", "e4", 1),  # a repeat: folds
        ],
        now_ms(),
    )
    first = await asyncio.wait_for(call.read(), 5)
    assert first.alert.dedup_key == "high"
    call.cancel()
    write_alerts(clickhouse, [alert("later", "e5", 2)], now_ms() + 1)
    resumed = stub.WatchAlerts(
        alert_service_pb2.WatchAlertsRequest(filter=request.filter, cursor=first.cursor)
    )
    second = await asyncio.wait_for(resumed.read(), 5)
    assert second.alert.dedup_key == "later"
    resumed.cancel()
