"""The embedded engine as connect() opens it."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


# In a fresh interpreter (the engine and its thread pool are the process's): a table's 300
# parts merged into one, then the 299 merged away removed, and the threads the process gained.
# "civicmeter" opens the engine as connect() does; "default" as chDB does by itself.
REMOVAL_PROBE = """
import os, sys, tempfile, time
import clickhouse_connect
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.connection import connect
path = tempfile.mkdtemp()
if sys.argv[1] == "civicmeter":
    client = connect(ClickHouseSettings(path=path, database="probe"))
else:
    client = clickhouse_connect.get_client(interface="chdb", path=path)
    client.command("CREATE DATABASE probe")
    client.database = "probe"
client.command(
    "CREATE TABLE removal_probe (k UInt64) ENGINE = MergeTree ORDER BY k"
    " SETTINGS cleanup_delay_period = 1, max_cleanup_delay_period = 1,"
    " cleanup_delay_period_random_add = 0"
)
client.command("SYSTEM STOP MERGES removal_probe")
for i in range(300):
    client.command(f"INSERT INTO removal_probe SELECT number + {i} FROM numbers(10)")
threads = len(os.listdir("/proc/self/task"))
client.command("SYSTEM START MERGES removal_probe")
client.command("OPTIMIZE TABLE removal_probe FINAL")
deadline = time.monotonic() + 60
parts = "SELECT count() FROM system.parts WHERE table = 'removal_probe'"
while client.query(parts).result_rows[0][0] > 1:
    assert time.monotonic() < deadline, "the parts merged away were not removed"
    time.sleep(0.2)
print(len(os.listdir("/proc/self/task")) - threads)
"""


def threads_gained_removing_parts(engine: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", REMOVAL_PROBE, engine],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads counted in /proc")
def test_the_embedded_engine_removes_parts_without_growing_its_thread_pool() -> None:
    assert threads_gained_removing_parts("civicmeter") < 10
    # The engine's defaults fan the same removal out over new threads that stay: the check
    # above can see them.
    assert threads_gained_removing_parts("default") >= 50


def test_the_embedded_engine_removes_merged_parts_within_half_a_minute(clickhouse: Client) -> None:
    # Parts merged away (~30 KiB of memory each) wait for the cleanup, whose rounds run at
    # most this long apart (300 s by default; under load they came every 3-4 minutes).
    rows = clickhouse.query(
        "SELECT value FROM system.merge_tree_settings WHERE name = 'max_cleanup_delay_period'"
    ).result_rows
    assert int(rows[0][0]) == 30
