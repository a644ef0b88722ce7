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


def test_the_embedded_engine_leaves_the_query_condition_cache_unused(clickhouse: Client) -> None:
    clickhouse.command(
        "CREATE TABLE condition_probe (k UInt64, v UInt64) ENGINE = MergeTree ORDER BY k"
        " SETTINGS index_granularity = 64"
    )
    clickhouse.command(
        "INSERT INTO condition_probe SELECT number, number % 1000 FROM numbers(20000)"
    )

    def entries() -> int:
        return int(
            clickhouse.query(
                "SELECT value FROM system.metrics WHERE metric = 'QueryConditionCacheEntries'"
            ).result_rows[0][0]
        )

    def filtered(threshold: int, **settings: int) -> None:
        clickhouse.query(
            "SELECT count() FROM condition_probe WHERE v < {t:UInt64} AND k > 100",
            parameters={"t": threshold},
            settings=settings,
        )

    before = entries()
    filtered(3)
    assert entries() == before
    # The same query with the cache allowed does fill it: the check above can see it.
    filtered(4, use_query_condition_cache=1)
    assert entries() > before
