"""The real query server (build_server: the interceptor, every servicer, signed page tokens)
on the embedded ClickHouse engine, with a little data and two keys, for tests that talk to it
over gRPC with raw bytes (so they can send what no stub would)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from google.protobuf.message import Message

from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings, QuerySettings
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.seats import Seat, sync_seats
from civicmeter.query.access import AuditLog
from civicmeter.query.server import build_server
from civicmeter.sink.alert_writer import write_alerts
from civicmeter.sink.event_writer import write_events
from tests.core.test_alert_store import alert
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated

ADMIN = "cmk_hostile_admin"
SEOUL = "cmk_hostile_seoul_security"
TOKEN_KEY = "current-page-token-key-0123456789abcdef"
OLD_TOKEN_KEY = "previous-page-token-key-0123456789abcdef"
SEAT_USER = "u_" + "0" * 32

QUERY = "/civicmeter.query.v1.QueryService/"
ALERTS = "/civicmeter.alert.v1.AlertService/"
SEATS = "/civicmeter.seat.v1.SeatService/"
BUDGETS = "/civicmeter.budget.v1.BudgetService/"
STREAMS = {QUERY + "ExportUsage", ALERTS + "WatchAlerts"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    channel: grpc.aio.Channel
    audit: AuditLog
    clickhouse: Client

    async def call(
        self, method: str, request: Message | bytes, token: str | None = ADMIN, timeout: float = 10
    ) -> list[bytes]:
        """The call's answers as bytes (one for a unary call, the first for a stream)."""
        body = request if isinstance(request, bytes) else request.SerializeToString()
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        if method in STREAMS:
            stream = self.channel.unary_stream(method)(body, metadata=metadata, timeout=timeout)
            first: bytes = await stream.read()
            stream.cancel()
            return [first]
        answer: bytes = await self.channel.unary_unary(method)(
            body, metadata=metadata, timeout=timeout
        )
        return [answer]

    async def refusal(
        self, method: str, request: Message | bytes, token: str | None = ADMIN
    ) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self.call(method, request, token)
        return refused.value

    async def healthy(self) -> None:
        answer = query_pb.GetCostBreakdownResponse.FromString(
            (await self.call(QUERY + "GetCostBreakdown", breakdown()))[0]
        )
        assert [line.key for line in answer.lines] == ["seoul"]


@contextlib.asynccontextmanager
async def serving(clickhouse: Client, tmp_path: Path) -> AsyncIterator[Server]:
    write_events(clickhouse, rated(event(), event()))
    write_alerts(clickhouse, [alert(f"k{i}", f"e{i}", i) for i in range(3)], now_ms())
    start = NOW.date().replace(day=1)
    sync_seats(clickhouse, [
        Seat("seoul", f"seat-{n}", "welfare", SEAT_USER, "openai", "chatgpt", "team", start, None)
        for n in range(3)])  # fmt: skip
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"id": "platform", "organization_id": "*", "role": "admin", "sha256": hash_token(ADMIN)},
        {"id": "seoul-security", "organization_id": "seoul", "role": "security",
         "sha256": hash_token(SEOUL)},
    ]}))  # fmt: skip
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        yaml.safe_dump({"version": "t", "defaults": {"budgets": {"monthly_krw": "1000"}}})
    )
    settings = QuerySettings(
        clickhouse=ClickHouseSettings(),
        grpc_port=free_port(),
        reflection=False,
        api_keys_file=keys,
        policy_file=policies,
        rate_per_key=0,
        cache_seconds=0,
        page_token_keys=(TOKEN_KEY, OLD_TOKEN_KEY),
    )
    audit = AuditLog(Storage(clickhouse))
    grpc_server = build_server(settings, Storage(clickhouse), audit)
    await grpc_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        yield Server(channel, audit, clickhouse)
    await grpc_server.stop(0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def breakdown(**fields: object) -> query_pb.GetCostBreakdownRequest:
    request = query_pb.GetCostBreakdownRequest(group_by=query_pb.COST_DIMENSION_ORGANIZATION)
    request.start_time.FromDatetime(NOW - timedelta(days=1))
    request.end_time.FromDatetime(NOW + timedelta(days=1))
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def ranged(message: Message, start: datetime, end: datetime) -> Message:
    for field, moment in (("start_time", start), ("end_time", end)):
        getattr(message, field).FromDatetime(moment)
    return message


def with_seconds(message: Message, field: str, seconds: int, nanos: int = 0) -> Message:
    stamp = getattr(message, field)
    stamp.seconds, stamp.nanos = seconds, nanos
    return message
