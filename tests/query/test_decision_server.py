"""The decision service's own process: its settings, its audit of every call, and what it does
when the audit log cannot take a record. (Decisions themselves: test_decision_service.py,
which runs every test against this server and the query service.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.core.access.auth import Principal
from civicmeter.core.config import ConfigError
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AuditEntry, AuditLog
from civicmeter.query.decision_server import DEFAULT_PORT, DEFAULT_RATE_PER_KEY, settings_from_env
from tests.query.test_decision_service import FINANCE, GATEWAY, POLICY, auth, request, serving
from tests.telemetry.memory import metric_points

DECIDE = "/civicmeter.decision.v1.DecisionService/Decide"
T = TypeVar("T")


def test_settings_are_the_query_services_on_the_decision_port() -> None:
    env = {"CIVICMETER_QUERY_GRPC_PORT": "50052", "CIVICMETER_QUERY_RATE_PER_KEY": "5",
           "CIVICMETER_API_KEYS_FILE": "/keys.yaml"}  # fmt: skip
    settings = settings_from_env(env)
    assert (settings.grpc_port, settings.rate_per_key) == (DEFAULT_PORT, DEFAULT_RATE_PER_KEY)
    assert settings.api_keys_file == Path("/keys.yaml")
    chosen = settings_from_env({**env, "CIVICMETER_DECISION_GRPC_PORT": "6000",
                                "CIVICMETER_DECISION_HOST": "0.0.0.0",
                                "CIVICMETER_DECISION_RATE_PER_KEY": "0"})  # fmt: skip
    assert (chosen.host, chosen.grpc_port, chosen.rate_per_key) == ("0.0.0.0", 6000, 0.0)
    with pytest.raises(ConfigError, match="CIVICMETER_DECISION_GRPC_PORT"):
        settings_from_env({"CIVICMETER_DECISION_GRPC_PORT": "decide"})
    with pytest.raises(ConfigError, match="CIVICMETER_DECISION_RATE_PER_KEY"):
        settings_from_env({"CIVICMETER_DECISION_RATE_PER_KEY": "-1"})


async def test_every_decide_call_is_audited_with_its_status(
    clickhouse: Client, tmp_path: Path
) -> None:
    audit = AuditLog(Storage(clickhouse))
    async with serving(clickhouse, tmp_path, kind="decision", audit=audit) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        await stub.Decide(request(provider="deepseek"), metadata=auth(GATEWAY))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Decide(request(), metadata=auth(FINANCE))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Decide(request(organization_id="busan"), metadata=auth(GATEWAY))
    await audit.flush()
    rows = clickhouse.query(
        "SELECT key_id, method, organization_id, status FROM audit_log"
    ).result_rows
    assert sorted(tuple(r) for r in rows) == [
        ("finance", DECIDE, "", "PERMISSION_DENIED"),
        ("gw-seoul", DECIDE, "busan", "PERMISSION_DENIED"),
        ("gw-seoul", DECIDE, "seoul", "OK"),  # the key's organisation, though not named
    ]


async def test_every_call_is_timed_with_its_status(clickhouse: Client, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    async with serving(clickhouse, tmp_path, kind="decision", meter=meter) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        for _ in range(3):
            await stub.Decide(request(), metadata=auth(GATEWAY))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Decide(request(), metadata=auth(FINANCE))
    timed = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.count
        for p in metric_points(reader, "rpc.server.call.duration")
    }
    assert timed == {(DECIDE, "OK"): 3, (DECIDE, "PERMISSION_DENIED"): 1}


async def test_a_full_audit_queue_refuses_decisions_and_counts_the_lost_records(
    clickhouse: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(Storage(clickhouse), max_pending=3)
    async with serving(clickhouse, tmp_path, kind="decision", audit=audit) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        for _ in range(3):  # fills the queue: three records wait for the writer
            answer = await stub.Decide(request(), metadata=auth(GATEWAY))
            assert answer.outcome == pb.OUTCOME_ALLOW
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Decide(request(), metadata=auth(GATEWAY))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "audit" in (refused.value.details() or "")
        assert audit.dropped == 1  # the refused call's own record: counted, not silent
        await audit.flush()  # the writer catches up: decisions are answered again
        assert caplog.text.count("1 records dropped") == 1
        again = await stub.Decide(request(), metadata=auth(GATEWAY))
        assert again.outcome == pb.OUTCOME_ALLOW
    assert clickhouse.query("SELECT count() FROM audit_log").result_rows == [(3,)]


class _Flaky(Storage):
    down = True

    async def run(self, fn: Callable[[Client], T]) -> T:
        if self.down:
            raise OSError("storage down")
        return await super().run(fn)


def _entry(n: int) -> AuditEntry:
    principal = Principal("k", "seoul", "gateway")
    stamp = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000) + n
    return AuditEntry(stamp, principal, DECIDE, "seoul", "OK", 0, "ipv4:127.0.0.1")


async def test_records_kept_through_a_storage_failure_stay_within_the_bound(
    clickhouse: Client, caplog: pytest.LogCaptureFixture
) -> None:
    storage = _Flaky(clickhouse)
    audit = AuditLog(storage, max_pending=4)
    assert [audit.record(_entry(n)) for n in range(5)] == [True, True, True, True, False]
    with pytest.raises(OSError):
        await audit.flush()
    assert audit.dropped == 1 and not audit.has_room()
    assert "1 records dropped" in caplog.text
    storage.down = False  # storage back: the four kept records are written
    await audit.flush()
    assert audit.has_room()
    assert clickhouse.query("SELECT count() FROM audit_log").result_rows == [(4,)]


async def test_a_policy_file_edit_decides_within_seconds(
    clickhouse: Client, tmp_path: Path
) -> None:
    async with serving(clickhouse, tmp_path, kind="decision") as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        first = await stub.Decide(request(), metadata=auth(GATEWAY))
        assert first.policy_version == "d-1"
        edited = {**POLICY, "version": "d-2"}
        (tmp_path / "policies.yaml").write_text(yaml.safe_dump(edited))
        deadline = time.monotonic() + 10
        answer = first
        while answer.policy_version != "d-2" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            answer = await stub.Decide(request(), metadata=auth(GATEWAY))
        assert answer.policy_version == "d-2"
        assert time.monotonic() < deadline
