"""Cost breakdowns by one dimension: the usage query (query/usage.py) with one group-by and
no time buckets, so they read the same rollups and are exact for any range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from civicmeter.query.usage import UsageQuery, usage

DIMENSIONS = ("organization", "department", "user", "service")


@dataclass(frozen=True)
class CostQuery:
    start: datetime
    end: datetime
    dimension: str  # one of DIMENSIONS
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


def cost_breakdown(client: Client, query: CostQuery, max_seconds: float | None = None) -> CostPage:
    page = usage(
        client,
        UsageQuery(
            start=query.start,
            end=query.end,
            group_by=(query.dimension,),
            organization_id=query.organization_id,
            after=None if query.after_key is None else (0, query.after_key),
            limit=query.limit,
        ),
        max_seconds,
        quantities=False,
    )
    rows = [CostRow(row.keys[0], row.cost, row.events) for row in page.rows]
    return CostPage(rows, page.totals.cost, page.has_more)
