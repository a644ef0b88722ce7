"""The `delivery` fixture: billing's publisher and the sink's write (tests/billing/delivery.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.core.store.connection import Storage
from tests.billing.delivery import Delivery, delivered


@pytest.fixture
async def delivery(kafka_bootstrap: str, clickhouse: Client) -> AsyncIterator[Delivery]:
    async with delivered(kafka_bootstrap, Storage(clickhouse)) as found:
        yield found
