"""grpcurl, a client written by nobody on this project, against the query API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings, QuerySettings
from civicmeter.core.store.connection import Storage
from civicmeter.query.server import build_server
from civicmeter.sink.event_writer import write_events
from loadtests.stack import free_port
from tests.factories import NOW, event
from tests.sink.test_event_writer import rated
from tests.tools.grpcurl import grpcurl_path

TOKEN = "cmk_grpcurl_test"


@pytest.fixture
async def target(
    clickhouse: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    write_events(clickhouse, rated(event(), event(department_id="welfare")))
    keys = tmp_path_factory.mktemp("keys") / "api-keys.yaml"
    keys.write_text(
        f"keys:\n  - id: seoul-finance\n    organization_id: seoul\n"
        f"    role: finance-reader\n    sha256: {hash_token(TOKEN)}\n"
    )
    settings = QuerySettings(ClickHouseSettings(), grpc_port=free_port(), api_keys_file=keys)
    server = build_server(settings, Storage(clickhouse))
    await server.start()
    yield f"{settings.host}:{settings.grpc_port}"
    await server.stop(0)


async def grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(grpcurl_path()),
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


async def test_grpcurl_lists_the_services_by_reflection(target: str) -> None:
    code, out, err = await grpcurl(target, "list")
    assert code == 0, err
    assert set(out.split()) >= {
        "civicmeter.query.v1.QueryService",
        "civicmeter.alert.v1.AlertService",
        "civicmeter.budget.v1.BudgetService",
        "grpc.health.v1.Health",
    }


async def test_grpcurl_queries_cost_with_a_token_and_is_refused_without(target: str) -> None:
    body = json.dumps({
        "startTime": (NOW - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "endTime": (NOW + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "groupBy": "COST_DIMENSION_DEPARTMENT",
    })  # fmt: skip
    method = "civicmeter.query.v1.QueryService/GetCostBreakdown"
    code, out, err = await grpcurl(
        "-H", f"authorization: Bearer {TOKEN}", "-d", body, target, method
    )
    assert code == 0, err
    answer = json.loads(out)
    assert [line["key"] for line in answer["lines"]] == ["digital-policy", "welfare"]
    assert answer["total_cost"] == {"currency_code": "KRW", "units": "12", "nanos": 640000000}
    code, _, err = await grpcurl("-d", body, target, method)
    assert code != 0 and "Unauthenticated" in err
