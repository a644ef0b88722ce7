"""The schema's history: numbered migrations, applied once each, in order, and recorded by name
in schema_migrations, so an existing database runs only those it has not recorded yet."""

from __future__ import annotations

from importlib import resources

from clickhouse_connect.driver.client import Client

_MIGRATIONS_TABLE = "schema_migrations"


def migration_scripts() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped with the package, in order."""
    folder = resources.files(__name__)
    scripts = sorted(
        (item.name, item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".sql")
    )
    return scripts


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
    for name, sql in migration_scripts():
        if name in done:
            continue
        for statement in _statements(sql):
            client.command(statement)
        client.insert(_MIGRATIONS_TABLE, [[name]], column_names=["name"])
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
