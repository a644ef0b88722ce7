from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tests.query.live_server import Server, serving


@pytest.fixture
async def server(clickhouse: Client, tmp_path: Path) -> AsyncIterator[Server]:
    """The real query server over gRPC (tests/query/live_server.py)."""
    async with serving(clickhouse, tmp_path) as running:
        yield running
