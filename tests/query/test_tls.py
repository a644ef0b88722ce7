"""TLS and mutual TLS on the query API, with certificates made by openssl for the test."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.client import CivicmeterClient
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings, ConfigError, QuerySettings
from civicmeter.core.store.connection import Storage
from civicmeter.query.server import build_server, server_credentials
from civicmeter.sink.event_writer import write_events
from loadtests.stack import free_port
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=civicmeter test CA",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        cn = "localhost" if name == "server" else "seoul-finance"
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extra,
            cwd=d,
        )
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@pytest.fixture
async def target(clickhouse: Client, pki: Pki, tmp_path: Path) -> AsyncIterator[str]:
    write_events(clickhouse, rated(event(), event(organization_id="busan")))
    keys = tmp_path / "api-keys.yaml"
    keys.write_text(
        "keys:\n  - id: seoul-finance\n    organization_id: seoul\n"
        f"    role: finance-reader\n    sha256: {hash_token('cmk_unused')}\n"
    )
    settings = QuerySettings(
        ClickHouseSettings(), grpc_port=free_port(), api_keys_file=keys,
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca)  # fmt: skip
    server = build_server(settings, Storage(clickhouse))
    await server.start()
    yield f"127.0.0.1:{settings.grpc_port}"
    await server.stop(0)


async def test_a_client_certificate_authenticates_as_the_key_it_names(
    target: str, pki: Pki
) -> None:
    async with CivicmeterClient(
        target, tls=True, root_certificates=pki.ca.read_bytes(),
        client_certificate=(pki.client_key.read_bytes(), pki.client_cert.read_bytes()),
    ) as api:  # fmt: skip
        answer = await api.cost_breakdown(
            NOW - timedelta(days=1), NOW + timedelta(days=1), "organization"
        )
    assert [line.key for line in answer.lines] == ["seoul"]  # the certificate's organisation


async def test_without_a_client_certificate_the_handshake_fails(target: str, pki: Pki) -> None:
    async with CivicmeterClient(
        target, "cmk_unused", tls=True, root_certificates=pki.ca.read_bytes(), timeout_seconds=5
    ) as api:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await api.cost_breakdown(NOW - timedelta(days=1), NOW, "organization")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_half_a_tls_configuration_is_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="go together"):
        server_credentials(QuerySettings(ClickHouseSettings(), tls_cert_file=pki.server_cert))
    with pytest.raises(ConfigError, match="CLIENT_CA needs"):
        server_credentials(QuerySettings(ClickHouseSettings(), tls_client_ca_file=pki.ca))
    assert server_credentials(QuerySettings(ClickHouseSettings())) is None
