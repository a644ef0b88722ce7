"""The embedded engine as connect() opens it."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from civicmeter.core.store.connection import ENGINE_CACHES


def test_the_embedded_engine_bounds_its_caches(clickhouse: Client) -> None:
    rows = clickhouse.query(
        "SELECT name, value FROM system.server_settings WHERE name IN {names:Array(String)}",
        parameters={"names": list(ENGINE_CACHES)},
    ).result_rows
    assert {str(name): int(value) for name, value in rows} == ENGINE_CACHES
