"""db.client.operation.duration of every call of a clickhouse-connect client (chDB)."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.core.store.timing import operation_name, time_operations
from tests.telemetry.memory import MemoryTelemetry

pytestmark = pytest.mark.clickhouse


def test_each_call_is_timed_once_by_its_operation(clickhouse: Client) -> None:
    memory = MemoryTelemetry()
    client = time_operations(clickhouse, memory.telemetry.meter)
    client.command("CREATE TABLE timed (n UInt32) ENGINE = MergeTree ORDER BY n")
    client.insert("timed", [[1], [2]], column_names=["n"])
    assert client.query("SELECT count() FROM timed").result_rows == [(2,)]
    client.query_arrow("SELECT n FROM timed")  # calls the client's own methods inside
    counts = {
        p.attributes["db.operation.name"]: p.count
        for p in memory.points("db.client.operation.duration")
        if p.attributes["db.system.name"] == "clickhouse"
    }
    assert counts == {"create": 1, "insert": 1, "select": 2}


def test_the_operation_is_the_statements_first_keyword() -> None:
    assert operation_name("  select 1") == "select"
    assert operation_name("WITH t AS (SELECT 1) SELECT * FROM t") == "select"
    assert operation_name("(SELECT 1) UNION ALL (SELECT 2)") == "select"
    assert operation_name("OPTIMIZE TABLE x FINAL") == "optimize"
    assert operation_name("") == "other"
    assert operation_name("1; DROP") == "other"
