"""Shared fixtures: the embedded ClickHouse engine, and the real Kafka broker for the suite."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import migrate

_databases = itertools.count()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def clickhouse(chdb_path: Path) -> Iterator[Client]:
    """A migrated, empty database in the session's embedded ClickHouse engine."""
    settings = ClickHouseSettings(
        path=str(chdb_path), database=f"t{next(_databases)}_{os.getpid()}"
    )
    client = connect(settings)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {settings.database}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka broker: CIVICMETER_TEST_KAFKA if set, else one started for the session.

    There is no skip: when the broker cannot start, every test that needs it errors.
    """
    existing = os.environ.get("CIVICMETER_TEST_KAFKA")
    if existing:
        yield existing
        return
    from tools.localkafka import LocalKafka

    with LocalKafka() as broker:
        yield broker.bootstrap_servers
