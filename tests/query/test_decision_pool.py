"""The decision process's thread-pool server: policy watchers hold a thread of the streams' pool
each, so their number is bounded and one more is refused; Decide calls are answered on a few
call threads, at most DECIDE_WORKERS however many arrive at once, with every one audited; a
budget read in progress holds up no decision but an organisation's first; reflection's streams
are bounded too; mutual TLS names the caller as on the query service."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from clickhouse_connect.driver.client import Client
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.core.access.auth import Principal, hash_token
from civicmeter.core.config import ClickHouseSettings, QuerySettings
from civicmeter.core.store.connection import Storage
from civicmeter.query.access import AuditEntry, AuditLog
from civicmeter.query.decision_server import (
    DECIDE_WORKERS,
    MAX_REFLECTION_STREAMS,
    build_decision_server,
)
from civicmeter.query.decision_service import FIRST_READ_SECONDS, REFRESH_SECONDS
from loadtests.stack import free_port
from tests.query.test_decision_service import GATEWAY, TWO_ORGS, auth, request, serving
from tests.query.test_tls import Pki, pki  # noqa: F401 (the certificates fixture)

WATCH = "/civicmeter.decision.v1.DecisionService/WatchPolicy"
DECIDE = "/civicmeter.decision.v1.DecisionService/Decide"
T = TypeVar("T")


def _watch(stub: decision_grpc.DecisionServiceStub) -> grpc.aio.UnaryStreamCall:
    return stub.WatchPolicy(pb.WatchPolicyRequest(), metadata=auth(GATEWAY))


async def test_watchers_beyond_the_limit_are_refused_and_decisions_go_on(
    clickhouse: Client, tmp_path: Path
) -> None:
    audit = AuditLog(Storage(clickhouse))
    async with serving(
        clickhouse, tmp_path, kind="decision", audit=audit, max_watchers=2
    ) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        first, second = _watch(stub), _watch(stub)
        assert (await first.read()).policy.policy_version == "d-1"
        assert (await second.read()).policy.policy_version == "d-1"
        streaming = [t for t in threading.enumerate() if t.name.startswith("decision-stream")]
        assert len(streaming) >= 2  # the watchers hold threads of the streams' pool
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _watch(stub).read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert "WatchPolicy" in details and "at most 2" in details and "retry" in details
        # The watchers' threads are not the ones Decide is answered on.
        answers = await asyncio.gather(
            *(stub.Decide(request(), metadata=auth(GATEWAY), timeout=10) for _ in range(20))
        )
        assert {a.outcome for a in answers} == {pb.OUTCOME_ALLOW}
        # A cancelled watcher's thread wakes at once (the stream's messages are 2 s apart) and
        # frees its place for another gateway.
        first.cancel()
        cancelled = time.monotonic()
        taken = None
        while taken is None and time.monotonic() - cancelled < 10:
            third = _watch(stub)
            try:
                taken = await third.read()
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        assert taken is not None and taken.policy.policy_version == "d-1"
        assert time.monotonic() - cancelled < 0.75 * REFRESH_SECONDS
    await audit.flush()
    rows = clickhouse.query(
        "SELECT status, count() FROM audit_log WHERE method = {m:String} GROUP BY status",
        parameters={"m": WATCH},
    ).result_rows
    statuses = {str(status): int(count) for status, count in rows}
    assert statuses.get("RESOURCE_EXHAUSTED", 0) >= 1
    assert statuses.get("CANCELLED", 0) >= 1  # the first watcher's end, audited once


async def test_decide_calls_run_on_several_pool_threads_and_every_one_is_audited(
    clickhouse: Client, tmp_path: Path
) -> None:
    audit = AuditLog(Storage(clickhouse))
    asked = [
        (request(), pb.OUTCOME_ALLOW),
        (request(provider="deepseek"), pb.OUTCOME_DENY),
        (request(pii_findings=[pb.FindingCount(type="kr_rrn", count=1)]), pb.OUTCOME_REDACT),
        (request(document_markings=[pb.FindingCount(type="confidential", count=1)]),
         pb.OUTCOME_DENY),
    ]  # fmt: skip
    calls = 400
    before = {t.ident for t in threading.enumerate() if t.name.startswith("decision-call")}
    stop_flushing = asyncio.Event()

    async def flush_meanwhile() -> None:  # the writer takes batches while threads append
        while not stop_flushing.is_set():
            await audit.flush()
            await asyncio.sleep(0.01)

    async with serving(clickhouse, tmp_path, kind="decision", audit=audit) as channel:
        stub = decision_grpc.DecisionServiceStub(channel)
        await stub.Decide(request(), metadata=auth(GATEWAY))  # the first budget read
        flusher = asyncio.create_task(flush_meanwhile())
        answers = await asyncio.gather(
            *(
                stub.Decide(asked[n % 4][0], metadata=auth(GATEWAY), timeout=30)
                for n in range(calls)
            )
        )
        stop_flushing.set()
        await flusher
        served = {t.ident for t in threading.enumerate() if t.name.startswith("decision-call")}
    assert [a.outcome for a in answers] == [asked[n % 4][1] for n in range(calls)]
    # 400 calls at once queue for the call threads: several answer, and no more than those
    # (a thread per waiting call would share the GIL with all the others).
    assert 1 < len(served - before) <= DECIDE_WORKERS
    await audit.flush()
    rows = clickhouse.query(
        "SELECT status, organization_id, count() FROM audit_log WHERE method = {m:String} "
        "GROUP BY status, organization_id",
        parameters={"m": DECIDE},
    ).result_rows
    # The requests name no organisation: the row names the one the key decided for.
    assert rows == [("OK", "seoul", calls + 1)]


def test_records_appended_by_many_threads_while_batches_are_taken_are_all_written(
    clickhouse: Client,
) -> None:
    audit = AuditLog(Storage(clickhouse))
    principal = Principal("k", "seoul", "gateway")
    threads, each = 8, 2000
    done = threading.Event()

    def append(worker: int) -> None:
        for n in range(each):
            stamp = 1_767_225_600_000 + worker * each + n
            audit.record(AuditEntry(stamp, principal, DECIDE, "seoul", "OK", 0, "ipv4:x"))

    def flush_until_done() -> None:
        while not done.is_set():
            asyncio.run(audit.flush())
        asyncio.run(audit.flush())

    writer = threading.Thread(target=flush_until_done)
    writer.start()
    appenders = [threading.Thread(target=append, args=(w,)) for w in range(threads)]
    for t in appenders:
        t.start()
    for t in appenders:
        t.join()
    done.set()
    writer.join()
    assert audit.dropped == 0
    counted = clickhouse.query("SELECT count(), uniqExact(call_time) FROM audit_log").result_rows
    assert counted == [(threads * each, threads * each)]


class _Gated(Storage):
    """Storage whose reads wait while the gate is shut, as a slow or hung ClickHouse would."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()  # a read is waiting at the gate

    def call(self, fn: Callable[[Client], T]) -> T:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(30)
        return super().call(fn)


@contextlib.asynccontextmanager
async def _gated_server(
    clickhouse: Client, tmp_path: Path
) -> AsyncIterator[tuple[decision_grpc.DecisionServiceStub, _Gated]]:
    storage = _Gated(clickhouse)
    try:
        async with serving(clickhouse, tmp_path, kind="decision", storage=storage) as channel:
            yield decision_grpc.DecisionServiceStub(channel), storage
    finally:
        storage.gate.set()  # no read left waiting after the test


async def test_a_budget_read_in_progress_holds_up_no_decision_but_an_organisations_first(
    clickhouse: Client, tmp_path: Path
) -> None:
    async with _gated_server(clickhouse, tmp_path) as (stub, storage):
        first = await stub.Decide(request(), metadata=auth(GATEWAY))  # Seoul's first read
        assert first.outcome == pb.OUTCOME_ALLOW
        storage.gate.clear()  # from now on, reads hang
        await asyncio.sleep(REFRESH_SECONDS + 0.2)  # Seoul's state is due for a refresh
        slowest = 0.0
        for _ in range(20):
            began = time.monotonic()
            answer = await stub.Decide(request(), metadata=auth(GATEWAY), timeout=10)
            slowest = max(slowest, time.monotonic() - began)
            assert answer.outcome == pb.OUTCOME_ALLOW
        assert storage.held.is_set(), "no refresh was started"
        assert slowest < 1.0, f"a decision waited {slowest:.2f} s on the hung read"
        # Busan's first call waits for Busan's first read; Seoul's calls go on meanwhile, on
        # the pool's other threads.
        busan = asyncio.ensure_future(
            stub.Decide(request(organization_id="busan"), metadata=auth(TWO_ORGS), timeout=30)
        )
        await asyncio.sleep(0.5)
        assert not busan.done()
        seoul = await stub.Decide(request(), metadata=auth(GATEWAY), timeout=5)
        assert seoul.organization_id == "seoul" and not busan.done()
        storage.gate.set()
        answered = await busan
        assert (answered.organization_id, answered.outcome) == ("busan", pb.OUTCOME_ALLOW)


async def test_an_organisations_first_call_waits_for_a_hung_read_a_bounded_time(
    clickhouse: Client, tmp_path: Path
) -> None:
    async with _gated_server(clickhouse, tmp_path) as (stub, storage):
        storage.gate.clear()  # every read hangs, the first ones included
        began = time.monotonic()
        calls = [
            stub.Decide(request(), metadata=auth(GATEWAY), timeout=30),
            stub.Decide(request(organization_id="busan"), metadata=auth(TWO_ORGS), timeout=30),
        ]
        answers = await asyncio.gather(*calls)
        waited = time.monotonic() - began
        assert storage.held.is_set()
        # Decided without a budget state once the first read outlasts its bound: the pool's
        # threads are not held for as long as ClickHouse hangs.
        assert [(a.organization_id, a.outcome) for a in answers] == [
            ("seoul", pb.OUTCOME_ALLOW),
            ("busan", pb.OUTCOME_ALLOW),
        ]
        assert FIRST_READ_SECONDS * 0.9 <= waited < FIRST_READ_SECONDS + 3


async def test_reflection_names_the_service_and_its_streams_are_bounded(
    clickhouse: Client, tmp_path: Path
) -> None:
    async with serving(clickhouse, tmp_path, kind="decision") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        open_streams = []
        for _ in range(MAX_REFLECTION_STREAMS):
            stream = stub.ServerReflectionInfo()
            await stream.write(listing)
            answer = await stream.read()
            names = {s.name for s in answer.list_services_response.service}
            assert "civicmeter.decision.v1.DecisionService" in names
            open_streams.append(stream)
        extra = stub.ServerReflectionInfo()  # refused at once, before it sends anything
        assert await extra.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "reflection" in (await extra.details() or "")
        for stream in open_streams:
            await stream.done_writing()


async def test_a_client_certificate_names_the_gateway_key_under_mutual_tls(
    clickhouse: Client,
    pki: Pki,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"  # the test certificate's common name is "seoul-finance"
    keys.write_text(
        "keys:\n  - id: seoul-finance\n    organization_id: seoul\n    role: gateway\n"
        f"    sha256: {hash_token('cmk_unused')}\n"
    )
    (tmp_path / "policies.yaml").write_text("version: tls-1\n")
    settings = QuerySettings(
        ClickHouseSettings(), grpc_port=free_port(), api_keys_file=keys,
        policy_file=tmp_path / "policies.yaml", tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key, tls_client_ca_file=pki.ca)  # fmt: skip
    server = build_decision_server(settings, Storage(clickhouse))
    await server.start()
    target = f"127.0.0.1:{settings.grpc_port}"
    root = pki.ca.read_bytes()
    try:
        mutual = grpc.ssl_channel_credentials(
            root, pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        async with grpc.aio.secure_channel(target, mutual) as channel:
            answer = await decision_grpc.DecisionServiceStub(channel).Decide(request(), timeout=10)
        assert (answer.organization_id, answer.policy_version) == ("seoul", "tls-1")
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await decision_grpc.DecisionServiceStub(channel).Decide(request(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no certificate, no call
    finally:
        await server.stop(0)
