"""The schema's history stays as databases applied it.

A database records each migration's name once applied and never runs it again, so every
migration must keep running exactly the statements it always did: the rollup migrations are
written from the registry, and a registry change that altered one would leave new databases
unlike existing ones. The fingerprints are of each migration's statements (white space folded)
as the databases in service ran them; a rollup that must change gets a new migration instead.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.connection import connect
from civicmeter.core.store.migrations import Migration, migrate, migrations

HISTORY = {
    "0001_usage_events.sql": "ef4f81bbec0df800",
    "0002_cost_rollups.sql": "eafb7fda9683f35c",
    "0003_alerts.sql": "fa2fc476347d9ce7",
    "0004_notifier.sql": "ee3a93fd45f783dc",
    "0005_audit_log.sql": "1afd8f6aee4abc91",
    "0006_daily_rollups.sql": "2ba6f55b376054ce",
    "0007_billing_rollups.sql": "81499db1f18aec05",
    "0008_seats.sql": "a11f6194c8945c10",
    "0009_write_journal.sql": "bcb0456bae28b628",
    "0010_decisions.sql": "7c84437a134ad285",
    "0011_seoul_rollup_views.sql": "0b3af6f4778f5ef4",
    "0012_seoul_views_without_grouping.sql": "37e7342fe3e5a67d",
}
_databases = itertools.count()


def _fingerprint(migration: Migration) -> str:
    folded = (
        re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", s)).strip()
        for s in migration.statements
    )
    return hashlib.sha256("\n".join(folded).encode()).hexdigest()[:16]


def test_every_recorded_migration_runs_what_it_always_ran() -> None:
    shipped = migrations()
    assert [m.name for m in shipped][: len(HISTORY)] == list(HISTORY)
    changed = [m.name for m in shipped if m.name in HISTORY and _fingerprint(m) != HISTORY[m.name]]
    assert changed == [], "add a migration rather than change one databases have applied"


def test_a_migrated_database_applies_nothing_again(clickhouse: Client) -> None:
    assert migrate(clickhouse) == []


@pytest.fixture
def empty_database(chdb_path: Path) -> Iterator[Client]:
    database = f"m{next(_databases)}_{os.getpid()}"
    client = connect(ClickHouseSettings(path=str(chdb_path), database=database))
    yield client
    client.command(f"DROP DATABASE IF EXISTS {database}")


def test_a_database_of_the_first_schema_upgrades_with_its_events_in_every_rollup(
    empty_database: Client,
) -> None:
    client = empty_database
    first = [m for m in migrations() if m.name < "0007"]
    for migration in first:  # as a database applied them before the billing rollups
        for statement in migration.statements:
            client.command(statement)
    client.command(
        "CREATE TABLE schema_migrations (name String, applied_time DateTime64(3, 'UTC') "
        "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name"
    )
    client.insert("schema_migrations", [[m.name] for m in first], column_names=["name"])
    client.command(
        "INSERT INTO usage_events (organization_id, department_id, user_id, event_id, "
        "event_time, service_id, input_tokens, cost_krw) VALUES "
        "('seoul', 'it', 'u1', 'e1', '2026-10-31 14:59:00', 'chat', 10, 1.5), "
        "('seoul', 'it', 'u1', 'e2', '2026-10-31 15:00:00', 'chat', 20, 2.25)"
    )

    applied = migrate(client)

    assert applied == [m.name for m in migrations() if m.name >= "0007"]
    sums = {
        table: client.query(f"SELECT sum(events), sum(cost_krw) FROM {table}").result_rows[0]
        for table in ("usage_cost_1m", "usage_rollup_1h", "usage_rollup_1d", "usage_rollup_1mo",
                      "usage_rollup_1mo_departments")
    }  # fmt: skip
    assert {table: (int(e), Decimal(str(c))) for table, (e, c) in sums.items()} == {
        table: (2, Decimal("3.75")) for table in sums
    }
    days = client.query(
        "SELECT window_start, sum(input_tokens) FROM usage_rollup_1d GROUP BY window_start "
        "ORDER BY window_start"
    ).result_rows
    assert [(str(day), int(tokens)) for day, tokens in days] == [
        ("2026-10-31", 10),
        ("2026-11-01", 20),  # 15:00 UTC is midnight in Seoul
    ]
