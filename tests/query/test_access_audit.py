"""The audit log over the real query server: every call gets exactly one row, with the status
the client saw, the caller, the organisation it asked for and the method; calls without a
valid credential are rate-limited per peer address."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError
from google.protobuf.message import Message

from civicmeter.api.alert.v1 import alert_service_pb2
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.query.access import UNAUTHENTICATED_RATE
from tests.query.live_server import (
    ADMIN,
    ALERTS,
    QUERY,
    SEOUL,
    Server,
    breakdown,
    with_seconds,
)

Row = tuple[str, str, str, str]  # key id, method, organisation, status


async def audit_rows(server: Server, expected: int, deadline_seconds: float = 10) -> list[Row]:
    """The audit rows once `expected` calls are recorded (a cancelled call is recorded when the
    server notices the cancellation, a moment after the client gave up)."""
    give_up = time.monotonic() + deadline_seconds
    rows: list[Row] = []
    while time.monotonic() < give_up:
        await server.audit.flush()
        rows = [
            (str(k), str(m), str(o), str(s))
            for k, m, o, s in server.clickhouse.query(
                "SELECT key_id, method, organization_id, status FROM audit_log"
            ).result_rows
        ]
        if len(rows) >= expected:
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_each_call_is_recorded_once_with_the_status_the_client_saw(server: Server) -> None:
    breakdown_method, list_alerts = QUERY + "GetCostBreakdown", ALERTS + "ListAlerts"
    seen: list[grpc.StatusCode] = []

    async def attempt(method: str, request: Message | bytes, token: str = ADMIN) -> None:
        try:
            await server.call(method, request, token)
            seen.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as refused:
            seen.append(refused.code())

    await attempt(breakdown_method, breakdown(organization_id="seoul"))
    await attempt(breakdown_method, with_seconds(breakdown(organization_id="jeju"), "end_time", -1))
    await attempt(  # a scoped key reaching for another organisation's alerts
        list_alerts,
        alert_service_pb2.ListAlertsRequest(
            filter=alert_service_pb2.AlertFilter(organization_id="busan")
        ),
        SEOUL,
    )
    await attempt(breakdown_method, breakdown(organization_id="seoul"), SEOUL)  # role refused
    await attempt(breakdown_method, breakdown(organization_id="jeju"), "cmk_guessed")
    await attempt(list_alerts, b"\xff\xff\xff\xff")  # undecodable
    server.clickhouse.command("RENAME TABLE usage_rollup_1h TO usage_rollup_1h_away")
    try:
        await attempt(breakdown_method, breakdown(organization_id="seoul"))  # storage fails
    finally:
        server.clickhouse.command("RENAME TABLE usage_rollup_1h_away TO usage_rollup_1h")
    assert seen == [
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
    ]
    # A watch the client cancels, and one that runs past the client's deadline.
    watch = server.channel.unary_stream(ALERTS + "WatchAlerts")
    stream = watch(
        alert_service_pb2.WatchAlertsRequest(replay_seconds=3600).SerializeToString(),
        metadata=(("authorization", f"Bearer {SEOUL}"),),
    )
    await stream.read()
    stream.cancel()
    expiring = watch(
        alert_service_pb2.WatchAlertsRequest().SerializeToString(),
        metadata=(("authorization", f"Bearer {SEOUL}"),),
        timeout=0.5,
    )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await expiring.read()
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    rows = await audit_rows(server, 9)
    watch_method = ALERTS + "WatchAlerts"
    assert sorted(rows) == sorted(
        [
            ("platform", breakdown_method, "seoul", "OK"),
            ("platform", breakdown_method, "jeju", "INVALID_ARGUMENT"),
            ("seoul-security", list_alerts, "busan", "PERMISSION_DENIED"),  # the one targeted
            ("seoul-security", breakdown_method, "seoul", "PERMISSION_DENIED"),
            ("unauthenticated", breakdown_method, "jeju", "UNAUTHENTICATED"),
            ("platform", list_alerts, "", "INVALID_ARGUMENT"),
            ("platform", breakdown_method, "seoul", "INTERNAL"),
            ("seoul-security", watch_method, "seoul", "CANCELLED"),
            ("seoul-security", watch_method, "seoul", "DEADLINE_EXCEEDED"),
        ]
    )


async def test_calls_without_a_credential_are_rate_limited_per_peer(server: Server) -> None:
    calls = 300
    started = time.monotonic()

    async def guess(i: int) -> grpc.StatusCode:
        try:
            await server.call(QUERY + "GetCostBreakdown", breakdown(), f"cmk_guess_{i}")
        except grpc.aio.AioRpcError as refused:
            return refused.code()
        return grpc.StatusCode.OK

    codes = Counter(await asyncio.gather(*(guess(i) for i in range(calls))))
    elapsed = time.monotonic() - started
    # The bucket: a burst of twice the rate, then the rate.
    admitted = 2 * UNAUTHENTICATED_RATE + UNAUTHENTICATED_RATE * elapsed
    unauthenticated = codes[grpc.StatusCode.UNAUTHENTICATED]
    assert 2 * UNAUTHENTICATED_RATE <= unauthenticated <= admitted + 1, (codes, elapsed)
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] == calls - unauthenticated
    # A valid key from the same address is not slowed down by the guesses.
    answer = query_pb.GetCostBreakdownResponse.FromString(
        (await server.call(QUERY + "GetCostBreakdown", breakdown()))[0]
    )
    assert answer.lines
    rows = await audit_rows(server, calls + 1)
    assert Counter(status for *_, status in rows) == {
        "UNAUTHENTICATED": unauthenticated,
        "RESOURCE_EXHAUSTED": codes[grpc.StatusCode.RESOURCE_EXHAUSTED],
        "OK": 1,
    }


async def test_records_survive_a_storage_failure_until_the_next_flush(server: Server) -> None:
    await server.call(QUERY + "GetCostBreakdown", breakdown(organization_id="seoul"))
    server.clickhouse.command("RENAME TABLE audit_log TO audit_log_away")
    try:
        with pytest.raises(ClickHouseError):
            await server.audit.flush()
    finally:
        server.clickhouse.command("RENAME TABLE audit_log_away TO audit_log")
    await server.call(QUERY + "GetCostBreakdown", breakdown(organization_id="jeju"))
    rows = await audit_rows(server, 2)
    assert sorted(organization for _, _, organization, _ in rows) == ["jeju", "seoul"]
