"""The schema's history: numbered migrations, applied once each, in order, and recorded by name
in schema_migrations, so an existing database runs only those it has not recorded yet.

Most are SQL files in this folder; those that made the rollups are written from the rollup
registry (rollup_history), under the names they were first recorded by.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

from civicmeter.core.store.migrations.rollup_history import ROLLUP_MIGRATIONS

_MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    name: str  # what schema_migrations records, e.g. 0001_usage_events.sql
    statements: tuple[str, ...]


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    found = [
        Migration(item.name, tuple(_statements(item.read_text(encoding="utf-8"))))
        for item in resources.files(__name__).iterdir()
        if item.name.endswith(".sql")
    ]
    found += [Migration(name, tuple(write())) for name, write in ROLLUP_MIGRATIONS.items()]
    names = [migration.name for migration in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two migrations share a name: {sorted(names)}")
    return sorted(found, key=lambda migration: migration.name)


def migrate(client: Client) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied now."""
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_MIGRATIONS_TABLE} "
        "(name String, applied_time DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {
        row[0] for row in client.query(f"SELECT name FROM {_MIGRATIONS_TABLE} FINAL").result_rows
    }
    applied: list[str] = []
    for migration in migrations():
        if migration.name in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(_MIGRATIONS_TABLE, [[migration.name]], column_names=["name"])
        applied.append(migration.name)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
