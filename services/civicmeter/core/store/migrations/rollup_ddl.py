"""The DDL of a rollup, written from its registry entry (store.rollups): its table, the
materialized views that feed it from the ledger, the backfill of events stored before it, and
the view form of a rollup that relabels the hour rollup's rows."""

from __future__ import annotations

from civicmeter.core.store.rollups import USAGE_ROLLUP_1H, Rollup

# How each measure sums rated events (the quantities: sum() of the column of the same name).
_EVENT_SUMS = {
    "events": "count()",
    "cost_krw": "sum(toDecimal128(cost_krw, 6))",
    "late_events": "countIf(late = 1)",
    "late_cost_krw": "sumIf(toDecimal128(usage_events.cost_krw, 6), late = 1)",
}


def create_table(rollup: Rollup) -> str:
    width = max(len(name) for name, _ in rollup.columns())
    columns = ",\n".join(f"    {name.ljust(width)} {kind}" for name, kind in rollup.columns())
    first, *rest = rollup.dimensions
    partition = "toYear" if rollup.grain == "month" else "toYYYYMM"
    return (
        f"CREATE TABLE IF NOT EXISTS {rollup.table}\n(\n{columns}\n)\n"
        "ENGINE = SummingMergeTree\n"
        f"PARTITION BY {partition}(window_start)\n"
        f"ORDER BY ({', '.join((first, 'window_start', *rest))})"
    )


def feed_from_events(rollup: Rollup) -> str:
    """The materialized view summing every block inserted into usage_events."""
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {rollup.table}_mv TO {rollup.table} AS\n"
        + _sum_events(rollup, "usage_events")
    )


def backfill(rollup: Rollup) -> str:
    """The events stored before the rollup was created."""
    return f"INSERT INTO {rollup.table}\n" + _sum_events(rollup, "usage_events FINAL")


def feed_from_corrections(rollup: Rollup) -> str:
    """The materialized view adding every re-rating delta to the rollup's cost."""
    dimensions = ", ".join(rollup.dimensions)
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {rollup.table}_corrections_mv "
        f"TO {rollup.table} AS\nSELECT\n"
        f"    {rollup.window('event_time')} AS window_start,\n    {dimensions},\n"
        "    sum(cost_delta_krw) AS cost_krw\n"
        f"FROM cost_corrections\nGROUP BY window_start, {dimensions}"
    )


def hour_view(rollup: Rollup, create: str = "CREATE OR REPLACE VIEW", grouped: bool = False) -> str:
    """`rollup` as a view of the hour rollup's rows, each labelled with its window: as is, or
    (`grouped`) summed by window and dimensions."""
    dimensions = ", ".join(rollup.dimensions)
    if grouped:
        measures = ",\n".join(f"    sum({m}) AS {m}" for m in rollup.measures)
        group_by = f"\nGROUP BY window_start, {dimensions}"
    else:
        measures, group_by = "    " + ", ".join(rollup.measures), ""
    return (
        f"{create} {rollup.table} AS\nSELECT\n"
        f"    {rollup.window('hour.window_start')} AS window_start,\n    {dimensions},\n"
        f"{measures}\nFROM {USAGE_ROLLUP_1H.table} AS hour{group_by}"
    )


def _sum_events(rollup: Rollup, source: str) -> str:
    sums = ",\n".join(f"    {_EVENT_SUMS.get(m, f'sum({m})')} AS {m}" for m in rollup.measures)
    dimensions = ", ".join(rollup.dimensions)
    return (
        f"SELECT\n    {rollup.window('event_time')} AS window_start,\n    {dimensions},\n{sums}\n"
        f"FROM {source}\nGROUP BY window_start, {dimensions}"
    )
