"""The rollup registry against the engine: every entry is what the migrations made of it.

The planner, reconciliation, budgets and seat reports read the rollups by the registry's names
and columns, so an entry that drifted from the schema (a column renamed or retyped, a dimension
added on one side only, a rollup the registry does not list) must fail here, not in a query.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from civicmeter.core.store.rollups import ROLLUPS, Rollup

_ROLLUP_PREFIXES = ("usage_cost_", "usage_rollup_")


def _tables(client: Client) -> dict[str, tuple[str, str]]:
    """name -> (engine, sorting key) of the database's tables and views."""
    rows = client.query(
        "SELECT name, engine, sorting_key FROM system.tables WHERE database = currentDatabase()"
    ).result_rows
    return {str(name): (str(engine), str(key)) for name, engine, key in rows}


def test_every_entry_has_the_engines_columns_and_types_in_order(clickhouse: Client) -> None:
    for rollup in ROLLUPS:
        columns = clickhouse.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = %(table)s ORDER BY position",
            parameters={"table": rollup.table},
        ).result_rows
        assert [tuple(c) for c in columns] == list(rollup.columns()), rollup.table


def test_tables_are_summing_on_their_dimensions_and_views_read_the_hours(
    clickhouse: Client,
) -> None:
    tables = _tables(clickhouse)
    for rollup in ROLLUPS:
        engine, key = tables[rollup.table]
        if rollup.over_hours:
            assert engine == "View", rollup.table
            continue
        first, *rest = rollup.dimensions
        assert engine == "SummingMergeTree", rollup.table
        assert key == ", ".join((first, "window_start", *rest)), rollup.table


def test_the_registry_lists_every_rollup_and_every_table_is_fed_by_both_sources(
    clickhouse: Client,
) -> None:
    tables = _tables(clickhouse)
    rollups = {
        name
        for name, (engine, _) in tables.items()
        if name.startswith(_ROLLUP_PREFIXES) and engine != "MaterializedView"
    }
    assert rollups == {rollup.table for rollup in ROLLUPS}
    feeds = {name for name, (engine, _) in tables.items() if engine == "MaterializedView"}
    fed: list[Rollup] = [rollup for rollup in ROLLUPS if not rollup.over_hours]
    assert {f"{r.table}_mv" for r in fed} | {f"{r.table}_corrections_mv" for r in fed} == feeds


def test_a_drifted_entry_is_told_apart(clickhouse: Client) -> None:
    # The check compares what matters: a dimension or a measure set that differs shows.
    hour = next(rollup for rollup in ROLLUPS if rollup.table == "usage_rollup_1h")
    columns = clickhouse.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'usage_rollup_1h' ORDER BY position"
    ).result_rows
    without_purpose = Rollup(hour.table, hour.grain, hour.calendar, hour.dimensions[:-1], False)
    cost_only = Rollup(hour.table, hour.grain, hour.calendar, hour.dimensions, True)
    for drifted in (without_purpose, cost_only):
        assert [tuple(c) for c in columns] != list(drifted.columns())
