"""Gateway authentication of the real ingest service (HTTP and gRPC) over the real broker:
who may publish, for which organisations and gateways, and what a refused batch leaves behind
(nothing: the topic is read back to prove it)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from civicmeter.api.event_json import encode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.api.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import hash_token, new_token
from civicmeter.core.config import IngestSettings, KafkaSettings, TlsFiles, TopicSettings
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.gateway.emitter import IngestRejectedError, UsageEmitter
from civicmeter.ingest.service import serve
from loadtests.stack import free_port
from tests.factories import event
from tests.query.test_tls import Pki, openssl, pki  # noqa: F401 (the test CA, a fixture)

pytestmark = [pytest.mark.kafka]

SEOUL_TOKEN = new_token()  # gateway key: seoul, as gateway gw-seoul-1 only
MULTI_TOKEN = new_token()  # gateway key: seoul and busan, any gateway
FINANCE_TOKEN = new_token()  # a query key: not a gateway's
KEYS = {
    "keys": [
        {"id": "gw-seoul", "role": "gateway", "organization_id": "seoul",
         "gateway_ids": ["gw-seoul-1"], "sha256": hash_token(SEOUL_TOKEN)},
        {"id": "gw-metro", "role": "gateway", "organization_ids": ["seoul", "busan"],
         "sha256": hash_token(MULTI_TOKEN)},
        {"id": "seoul-finance", "role": "finance-reader", "organization_id": "seoul",
         "sha256": hash_token(FINANCE_TOKEN)},
        {"id": "gw-seoul-tls", "role": "gateway", "organization_id": "seoul",
         "sha256": hash_token(new_token())},
    ]
}  # fmt: skip
JSON = "application/cloudevents-batch+json"


@dataclass
class Ingest:
    settings: IngestSettings
    metrics: InMemoryMetricReader
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.settings.http_port}/v1/events"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def topic(self) -> str:
        return self.settings.kafka.topics.raw

    def refused_calls(self) -> dict[tuple[str, str], int]:
        return refused_calls(self.metrics)


def refused_calls(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    """civicmeter.ingest.refused_calls by (reason, protocol)."""
    counts: dict[tuple[str, str], int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "civicmeter.ingest.refused_calls":
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        attrs = point.attributes or {}
                        key = (str(attrs["reason"]), str(attrs["protocol"]))
                        counts[key] = int(point.value)
    return counts


@contextlib.asynccontextmanager
async def running_ingest(
    kafka_bootstrap: str, keys_file: Path | None, tls: TlsFiles | None = None, rate: float = 50.0
) -> AsyncIterator[Ingest]:
    """The ingest service in this process (its metrics readable), on a topic of its own."""
    topics = TopicSettings(raw=f"usage.raw.auth-{uuid.uuid4().hex[:8]}", partitions=2)
    settings = IngestSettings(
        KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=topics),
        http_port=free_port(), grpc_port=free_port(), linger_ms=0,
        keys_file=keys_file, tls=tls or TlsFiles(), refused_rate_per_peer=rate,
    )  # fmt: skip
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        trace.get_tracer("test"), MeterProvider(metric_readers=[reader]).get_meter("test")
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, telemetry, stop))
    ingest = Ingest(settings, reader, "https" if tls else "http")
    deadline = time.monotonic() + 30
    while not _listening(settings.http_port):
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "ingest did not start"
        await asyncio.sleep(0.1)
    try:
        yield ingest
    finally:
        stop.set()
        await task


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway-keys.yaml"
    path.write_text(yaml.safe_dump(KEYS))
    return path


@pytest.fixture
async def ingest(kafka_bootstrap: str, keys_file: Path) -> AsyncIterator[Ingest]:
    async with running_ingest(kafka_bootstrap, keys_file) as running:
        yield running


def now_event(**changes: Any) -> pb.UsageEvent:
    return event(event_time=datetime.now(UTC) - timedelta(minutes=5), **changes)


async def post(
    url: str, events: Sequence[pb.UsageEvent], token: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": JSON}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=encode_batch(list(events)), headers=headers, **kwargs) as resp,
    ):
        return resp.status, await resp.json(), dict(resp.headers)


async def publish_grpc(
    target: str,
    events: Sequence[pb.UsageEvent],
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channel = (
        grpc.aio.secure_channel(
            target, credentials, (("grpc.ssl_target_name_override", "localhost"),)
        )
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        response = await ingest_grpc.IngestServiceStub(channel).PublishEvents(
            ingest_pb.PublishEventsRequest(events=events), metadata=metadata, timeout=10
        )
    return int(response.accepted_count)


async def published_ids(ingest: Ingest, until: str, timeout: float = 30.0) -> set[str]:
    """Event ids on the ingest's topic, read from the start until event `until` appears."""
    consumer = AIOKafkaConsumer(
        ingest.topic,
        bootstrap_servers=ingest.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while until not in ids:
            assert time.monotonic() < deadline, f"{until} never reached {ingest.topic}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:  # a UsageEventBatch each (the topic's contract)
                    batch = pb.UsageEventBatch.FromString(record.value or b"")
                    ids |= {e.event_id for e in batch.events}
    finally:
        await consumer.stop()
    return ids


async def test_no_credential_is_unauthenticated_on_both_fronts(ingest: Ingest) -> None:
    status, body, headers = await post(ingest.url, [now_event()])
    assert status == 401
    assert body["error"].startswith("authorization:")
    assert headers["WWW-Authenticate"] == "Bearer"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish_grpc(ingest.grpc_target, [now_event()])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bad_token_is_unauthenticated(ingest: Ingest) -> None:
    status, _, _ = await post(ingest.url, [now_event()], token=SEOUL_TOKEN + "x")
    assert status == 401
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish_grpc(ingest.grpc_target, [now_event()], token=new_token())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ingest.refused_calls() == {("unauthenticated", "http"): 1,
                                      ("unauthenticated", "grpc"): 1}  # fmt: skip


async def test_a_query_key_may_not_publish(ingest: Ingest) -> None:
    status, body, _ = await post(ingest.url, [now_event()], token=FINANCE_TOKEN)
    assert status == 403
    assert "'seoul-finance' is not a gateway key" in body["error"]


async def test_a_foreign_organisation_refuses_the_whole_batch_and_nothing_is_published(
    ingest: Ingest,
) -> None:
    http_batch = [now_event(), now_event(), now_event(organization_id="gyeonggi"), now_event()]
    status, body, _ = await post(ingest.url, http_batch, token=SEOUL_TOKEN)
    assert status == 403
    assert body["error"].startswith("events[2].data.organization_id:")
    assert "'gyeonggi'" in body["error"]

    grpc_batch = [now_event(), now_event(), now_event(organization_id="busan")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await publish_grpc(ingest.grpc_target, grpc_batch, token=SEOUL_TOKEN)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (info.value.details() or "").startswith("events[2].organization_id:")

    sentinel = now_event()
    assert await publish_grpc(ingest.grpc_target, [sentinel], token=SEOUL_TOKEN) == 1
    published = await published_ids(ingest, until=sentinel.event_id)
    assert published == {sentinel.event_id}  # not one event of either refused batch
    assert ingest.refused_calls() == {("permission_denied", "http"): 1,
                                      ("permission_denied", "grpc"): 1}  # fmt: skip


async def test_a_key_bound_to_gateways_refuses_another_gateway_id(ingest: Ingest) -> None:
    status, body, _ = await post(
        ingest.url, [now_event(), now_event(gateway_id="gw-busan-1")], token=SEOUL_TOKEN
    )
    assert status == 403
    assert body["error"].startswith("events[1].source:")


async def test_a_key_bound_to_several_organisations_reports_for_each(ingest: Ingest) -> None:
    batch = [now_event(organization_id="seoul"), now_event(organization_id="busan", gateway_id="x")]
    status, body, _ = await post(ingest.url, batch, token=MULTI_TOKEN)
    assert (status, body) == (202, {"accepted_count": 2})
    status, body, _ = await post(ingest.url, [now_event(organization_id="daegu")], MULTI_TOKEN)
    assert status == 403 and body["error"].startswith("events[0].data.organization_id:")
    published = await published_ids(ingest, until=batch[1].event_id)
    assert published == {e.event_id for e in batch}


async def test_the_emitter_sends_its_gateway_key(ingest: Ingest) -> None:
    base = ingest.url.removesuffix("/v1/events")
    async with UsageEmitter(base, token=SEOUL_TOKEN) as emitter:
        assert await emitter.send([now_event(), now_event()]) == 2
    async with UsageEmitter(base) as anonymous:
        with pytest.raises(IngestRejectedError) as info:
            await anonymous.send([now_event()])
    assert info.value.status == 401


async def test_unauthenticated_floods_are_rate_limited_per_peer(
    kafka_bootstrap: str, keys_file: Path
) -> None:
    async with running_ingest(kafka_bootstrap, keys_file, rate=2.0) as ingest:  # bursts of 4
        statuses = [(await post(ingest.url, [now_event()]))[0] for _ in range(10)]
        assert statuses[:4] == [401] * 4
        assert set(statuses[4:]) == {429}
        status, body, headers = await post(ingest.url, [now_event()])
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert "too many refused calls" in body["error"]
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the same peer over gRPC
            await publish_grpc(ingest.grpc_target, [now_event()])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Only refusals spend the allowance: a gateway at the same address is still served.
        status, _, _ = await post(ingest.url, [now_event()], token=SEOUL_TOKEN)
        assert status == 202
        assert ingest.refused_calls() == {("unauthenticated", "http"): 4,
                                          ("rate_limited", "http"): 7,
                                          ("rate_limited", "grpc"): 1}  # fmt: skip


async def test_without_a_key_file_ingest_is_open_and_says_so(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_ingest(kafka_bootstrap, None) as ingest:
        status, _, _ = await post(ingest.url, [now_event(organization_id="gyeonggi")])
    assert status == 202
    assert "no gateway keys configured" in caplog.text


# --- mutual TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_cert(pki: Pki) -> tuple[Path, Path]:  # noqa: F811 (the imported fixture)
    """A client certificate of the test CA whose common name is the key id gw-seoul-tls."""
    d = pki.ca.parent
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "gw.key", "-out", "gw.csr",
            "-subj", "/CN=gw-seoul-tls", cwd=d)  # fmt: skip
    openssl("x509", "-req", "-in", "gw.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "gw.crt", "-days", "2", cwd=d)  # fmt: skip
    return d / "gw.crt", d / "gw.key"


@pytest.fixture
async def mtls_ingest(
    kafka_bootstrap: str,
    keys_file: Path,
    pki: Pki,  # noqa: F811
) -> AsyncIterator[Ingest]:
    tls = TlsFiles(pki.server_cert, pki.server_key, pki.ca)
    async with running_ingest(kafka_bootstrap, keys_file, tls) as running:
        yield running


def client_ssl(pki: Pki, cert: Path, key: Path) -> ssl.SSLContext:  # noqa: F811
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(cert, key)
    return context


async def test_a_client_certificate_naming_a_gateway_key_authenticates(
    mtls_ingest: Ingest,
    pki: Pki,  # noqa: F811
    gateway_cert: tuple[Path, Path],
) -> None:
    cert, key = gateway_cert
    status, body, _ = await post(mtls_ingest.url, [now_event()], ssl=client_ssl(pki, cert, key))
    assert (status, body) == (202, {"accepted_count": 1})
    # Its organisation binds it too.
    status, body, _ = await post(
        mtls_ingest.url, [now_event(organization_id="busan")], ssl=client_ssl(pki, cert, key)
    )
    assert status == 403 and body["error"].startswith("events[0].data.organization_id:")
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    sentinel = now_event()
    assert await publish_grpc(mtls_ingest.grpc_target, [sentinel], credentials=credentials) == 1
    assert sentinel.event_id in await published_ids(mtls_ingest, until=sentinel.event_id)


async def test_a_certificate_of_a_non_gateway_key_needs_a_token(
    mtls_ingest: Ingest,
    pki: Pki,  # noqa: F811
) -> None:
    # The test CA's other client certificate names seoul-finance, a query key.
    context = client_ssl(pki, pki.client_cert, pki.client_key)
    status, _, _ = await post(mtls_ingest.url, [now_event()], ssl=context)
    assert status == 403
    status, _, _ = await post(mtls_ingest.url, [now_event()], token=SEOUL_TOKEN, ssl=context)
    assert status == 202


async def test_without_a_client_certificate_the_handshake_fails(
    mtls_ingest: Ingest,
    pki: Pki,  # noqa: F811
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(aiohttp.ClientError):
        await post(mtls_ingest.url, [now_event()], token=SEOUL_TOKEN, ssl=context)
