"""StorageProcess: ClickHouse work in a child process, on the real embedded engine.

The child owns its own data directory (the embedded engine is opened by one process at a time),
so everything is read back through the child too.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.api.usage.v1 import usage_event_pb2 as usage_pb
from civicmeter.core.access.auth import Principal
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.store.connection import Storage, StorageCalls
from civicmeter.core.store.migrations import migrate
from civicmeter.core.store.storage_process import (
    StorageError,
    StorageLink,
    StorageProcess,
    start_shared,
)
from civicmeter.policy.decision import BudgetState
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from civicmeter.query.access import AuditEntry, AuditLog
from civicmeter.query.decision_service import BudgetStates
from civicmeter.sink.event_writer import write_events
from tests.factories import catalog, event

PRINCIPAL = Principal("gw-1", "seoul", "gateway")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[StorageProcess]:
    process = StorageProcess(ClickHouseSettings(path=str(tmp_path / "chdb"), database="sp"))
    process.call(migrate)
    yield process
    process.close()


def _entry(n: int) -> AuditEntry:
    return AuditEntry(
        n,
        PRINCIPAL,
        "/civicmeter.decision.v1.DecisionService/Decide",
        "seoul",
        "OK",
        n % 7,
        f"ipv4:127.0.0.1:{n}",
    )


def _result_rows(sql: str, client: Client) -> list[tuple[object, ...]]:
    # Runs in the child (pickled by name): a query result itself cannot be sent back.
    return [tuple(row) for row in client.query(sql).result_rows]


def _rows(storage: StorageProcess, sql: str) -> list[tuple[object, ...]]:
    return storage.call(functools.partial(_result_rows, sql))


def test_migrations_and_audit_rows_are_written_by_the_child(storage: StorageProcess) -> None:
    audit = AuditLog(storage)
    for n in range(1, 1001):
        assert audit.record(_entry(n))
    asyncio.run(audit.flush())
    rows = _rows(
        storage,
        "SELECT count(), sum(duration_ms), uniqExact(peer), any(key_id), any(status) "
        "FROM audit_log",
    )
    assert rows == [(1000, sum(n % 7 for n in range(1, 1001)), 1000, "gw-1", "OK")]
    assert storage.starts == 1
    assert storage._process is not None and storage._process.pid != os.getpid()


def test_a_failing_function_raises_with_its_reason_and_the_child_goes_on(
    storage: StorageProcess,
) -> None:
    with pytest.raises(StorageError, match="no_such_table"):
        storage.call(operator.methodcaller("command", "SELECT * FROM no_such_table"))
    assert storage.call(operator.methodcaller("command", "SELECT 41 + 1")) == 42
    assert storage.starts == 1


def test_what_cannot_be_pickled_is_refused_and_the_child_goes_on(
    storage: StorageProcess,
) -> None:
    with pytest.raises(Exception, match="pickle"):
        storage.call(lambda client: client.command("SELECT 1"))
    with pytest.raises(StorageError, match="could not be sent back"):
        storage.call(operator.methodcaller("query", "SELECT 1"))  # a result with a generator
    assert storage.call(operator.methodcaller("command", "SELECT 1")) == 1
    assert storage.starts == 1


def test_a_killed_child_loses_no_audit_row_and_is_started_again(
    storage: StorageProcess,
) -> None:
    audit = AuditLog(storage)
    for n in range(1, 101):
        audit.record(_entry(n))
    asyncio.run(audit.flush())
    assert storage._process is not None
    pid = storage._process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    storage._process.join(10)
    for n in range(101, 201):
        audit.record(_entry(n))
    # The flush that meets the dead child fails and keeps its rows; the next starts a child.
    asyncio.run(audit.flush())
    asyncio.run(audit.flush())
    assert storage.starts == 2
    rows = _rows(storage, "SELECT count(), uniqExact(peer), min(call_time) > 0 FROM audit_log")
    assert rows == [(200, 200, True)]
    assert audit.dropped == 0


def test_close_ends_the_child_and_a_later_call_starts_one(storage: StorageProcess) -> None:
    assert storage._process is not None
    first = storage._process
    storage.close()
    assert not first.is_alive() and first.exitcode == 0  # ended by its closed pipe
    assert storage.call(operator.methodcaller("command", "SELECT count() FROM audit_log")) == 0
    assert storage.starts == 2


def test_budget_states_read_through_the_child_equal_those_read_in_process(
    storage: StorageProcess, clickhouse: Client
) -> None:
    now = datetime.now(UTC)
    events = [
        event(department_id=department, event_time=now - timedelta(minutes=1))
        for department in ("welfare", "welfare", "culture")
    ]
    records = [RawRecord(encode_event_batch([e]), 0, i) for i, e in enumerate(events)]
    result = BatchProcessor(catalog(), "usage.raw").process(records, now)
    rated = [usage_pb.RatedUsageEvent.FromString(v) for _, v in result.rated]
    write_events(clickhouse, rated)
    storage.call(functools.partial(write_events, batch=rated))

    def state(where: StorageCalls) -> BudgetState | None:
        return BudgetStates(where, lambda: now, refresh_seconds=60).get("seoul")

    in_process, through_child = state(Storage(clickhouse)), state(storage)
    assert through_child is not None and through_child == in_process
    assert through_child.department("welfare").month_krw > 0
    assert through_child.organization.month_krw == sum(
        s.month_krw for s in through_child.departments.values()
    )


def test_a_shared_storage_process_serves_each_pipe_and_ends_with_the_last(
    tmp_path: Path,
) -> None:
    """start_shared: several processes' links (here two in this process) write one database;
    a failing call on one link leaves the other served; the storage process ends when the
    last link closes, and a call on a closed group raises StorageError."""
    settings = ClickHouseSettings(path=str(tmp_path / "chdb"), database="shared")
    process, pipes = start_shared(settings, 2)
    first, second = (StorageLink(pipe) for pipe in pipes)
    first.call(migrate)
    assert second.call(migrate) == []  # the same database: nothing left to apply
    for n, link in enumerate((first, second, first, second)):
        audit = AuditLog(link)
        for m in range(1, 251):
            assert audit.record(_entry(n * 1000 + m))
        asyncio.run(audit.flush())
    with pytest.raises(StorageError, match="no_such_table"):
        first.call(functools.partial(_result_rows, "SELECT * FROM no_such_table"))
    assert second.call(
        functools.partial(_result_rows, "SELECT count(), uniqExact(peer) FROM audit_log")
    ) == [(1000, 1000)]
    first.close()
    assert second.call(operator.methodcaller("command", "SELECT 1")) == 1
    assert process.is_alive()
    second.close()
    process.join(30)
    assert process.exitcode == 0
    with pytest.raises((StorageError, OSError)):
        second.call(migrate)
