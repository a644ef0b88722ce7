"""Cost breakdowns read from the rollups, never by scanning raw events when avoidable.

A day-aligned range reads a daily rollup (without users unless grouped by user), an
hour-aligned one usage_cost_1h, a minute-aligned one usage_cost_1m; any other range reads
usage_events with FINAL, so the answer is exact, not merely eventually exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

DIMENSIONS = {
    "organization": "organization_id",
    "department": "department_id",
    "user": "user_id",
    "service": "service_id",
}


@dataclass(frozen=True)
class CostQuery:
    start: datetime
    end: datetime
    dimension: str  # a key of DIMENSIONS
    organization_id: str | None
    after_key: str | None
    limit: int


@dataclass(frozen=True)
class CostRow:
    key: str
    cost: Decimal
    events: int


@dataclass(frozen=True)
class CostPage:
    rows: list[CostRow]
    total: Decimal
    has_more: bool


def source_table(start: datetime, end: datetime, dimension: str = "user") -> tuple[str, str, str]:
    """(table, time column, event-count expression) that answers [start, end) exactly,
    reading as few rows as the alignment of the range and the dimension allow."""
    if _aligned(start, 86_400) and _aligned(end, 86_400):
        table = "usage_cost_1d" if dimension == "user" else "usage_cost_1d_departments"
        return table, "window_start", "sum(events)"
    if _aligned(start, 3600) and _aligned(end, 3600):
        return "usage_cost_1h", "window_start", "sum(events)"
    if _aligned(start, 60) and _aligned(end, 60):
        return "usage_cost_1m", "window_start", "sum(events)"
    return "usage_events FINAL", "event_time", "count()"


def _millis(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _aligned(t: datetime, seconds: int) -> bool:
    return t.timestamp() % seconds == 0


def cost_breakdown(client: Client, query: CostQuery, max_seconds: float | None = None) -> CostPage:
    """One page of the breakdown. `max_seconds` (the caller's remaining deadline) bounds each
    query in ClickHouse itself, so a query the client gave up on does not run on."""
    settings = {"max_execution_time": max(1, math.ceil(max_seconds))} if max_seconds else None
    column = DIMENSIONS[query.dimension]
    table, time_column, events = source_table(query.start, query.end, query.dimension)
    # Epoch milliseconds, so no time zone of client or server can shift the range.
    where = [
        f"{time_column} >= fromUnixTimestamp64Milli(%(start)s, 'UTC')",
        f"{time_column} < fromUnixTimestamp64Milli(%(end)s, 'UTC')",
    ]
    params: dict[str, object] = {"start": _millis(query.start), "end": _millis(query.end)}
    if query.organization_id is not None:
        where.append("organization_id = %(org)s")
        params["org"] = query.organization_id
    total_row = client.query(
        f"SELECT sum(cost_krw) FROM {table} WHERE {' AND '.join(where)}",
        parameters=params,
        settings=settings,
    ).result_rows
    total = Decimal(total_row[0][0]) if total_row and total_row[0][0] is not None else Decimal(0)
    if query.after_key is not None:
        where.append(f"{column} > %(after)s")
        params["after"] = query.after_key
    params["limit"] = query.limit + 1
    rows = client.query(
        f"SELECT {column} AS key, sum(cost_krw) AS cost, {events} AS events FROM {table} "
        f"WHERE {' AND '.join(where)} GROUP BY key ORDER BY key LIMIT %(limit)s",
        parameters=params,
        settings=settings,
    ).result_rows
    page = [CostRow(str(key), Decimal(cost), int(count)) for key, cost, count in rows]
    return CostPage(page[: query.limit], total, len(page) > query.limit)
