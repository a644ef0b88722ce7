"""civicmeter.query.v1.QueryService: the usage query (query/usage.py) on the wire.

QueryUsage, GetCostSummary, ExportUsage and GetCostBreakdown (a usage query grouped by one
dimension, without time buckets) all become UsageQuery values (INVALID_ARGUMENT names the
offending field), the tenant predicate comes from the caller's credentials, and every
ClickHouse query is bounded by the call's remaining deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import NoReturn

import grpc
from clickhouse_connect.driver.client import Client

from civicmeter.api.money import to_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing.catalog_source import CatalogSource
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.seats import SUBSCRIPTION
from civicmeter.query import page_token
from civicmeter.query.access import TenantError, abort_if_foreign, tenant_scope
from civicmeter.query.arguments import time_range
from civicmeter.query.cache import AnswerCache
from civicmeter.query.deadline import read_within_deadline
from civicmeter.query.focus import correction_lines, usage_lines
from civicmeter.query.focus_charges import correction_charges, usage_charges
from civicmeter.query.paging import MAX_PAGE_SIZE, page_size, position
from civicmeter.query.time_zones import TimeZones
from civicmeter.query.usage import (
    DIMENSIONS,
    UsagePage,
    UsageQuery,
    UsageQueryError,
    check,
    rerating_adjustments,
    usage,
)

SERVICE_NAME = query_pb.DESCRIPTOR.services_by_name["QueryService"].full_name
MAX_PERIODS = 1000
EXPORT_CHUNK = 1000
_DIMENSION_NAMES = {
    query_pb.DIMENSION_ORGANIZATION: "organization",
    query_pb.DIMENSION_DEPARTMENT: "department",
    query_pb.DIMENSION_USER: "user",
    query_pb.DIMENSION_SERVICE: "service",
    query_pb.DIMENSION_PROVIDER: "provider",
    query_pb.DIMENSION_MODEL: "model",
    query_pb.DIMENSION_OPERATION: "operation",
    query_pb.DIMENSION_PURPOSE: "purpose",
    query_pb.DIMENSION_DECISION: "decision",
}
_COST_DIMENSIONS = {
    query_pb.COST_DIMENSION_ORGANIZATION: "organization",
    query_pb.COST_DIMENSION_DEPARTMENT: "department",
    query_pb.COST_DIMENSION_USER: "user",
    query_pb.COST_DIMENSION_SERVICE: "service",
}
# Bound on a background refresh of a cached breakdown, which no caller's deadline bounds.
REFRESH_SECONDS = 30.0
_GRANULARITIES = {
    query_pb.GRANULARITY_UNSPECIFIED: None,
    query_pb.GRANULARITY_HOUR: "hour",
    query_pb.GRANULARITY_DAY: "day",
    query_pb.GRANULARITY_MONTH: "month",
}
_PERIOD_SECONDS = {"hour": 3600, "day": 86_400, "month": 28 * 86_400}
assert set(_DIMENSION_NAMES.values()) == set(DIMENSIONS)


class QueryService(query_grpc.QueryServiceServicer):
    def __init__(
        self,
        storage: Storage,
        cache_seconds: float = 0.0,  # how long a cost breakdown is reused
        tokens: page_token.PageTokens | None = None,
        prices: CatalogSource | None = None,  # unit prices of the FOCUS export
    ) -> None:
        self._storage = storage
        self._prices = prices
        self._tokens = tokens or page_token.process_tokens()
        self._zones = TimeZones(storage)
        # Whole answers, keyed by the caller's tenant scope and the request as sent.
        self._cache: AnswerCache[tuple[str | None, bytes], query_pb.GetCostBreakdownResponse] = (
            AnswerCache(cache_seconds)
        )

    async def _zone(self, requested: str) -> str:
        return await self._zones.check("time_zone", requested or "Asia/Seoul")

    async def QueryUsage(  # noqa: N802 (gRPC method name)
        self, request: query_pb.QueryUsageRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.QueryUsageResponse:
        size = await page_size(context, request.page_size)
        start, end = _range(request)
        organization = await abort_if_foreign(context, request.organization_id)
        group_by: list[str] = []
        for i, value in enumerate(request.group_by):
            name = _DIMENSION_NAMES.get(value)
            if name is None:
                await _invalid(context, f"group_by[{i}]: must be a Dimension, not {value}")
            group_by.append(str(name))
        filters: list[tuple[str, tuple[str, ...]]] = []
        for i, item in enumerate(request.filters):
            name = _DIMENSION_NAMES.get(item.dimension)
            if name is None:
                await _invalid(context, f"filters[{i}].dimension: must be a Dimension")
            filters.append((str(name), tuple(item.values)))
        granularity = _GRANULARITIES.get(request.granularity, "invalid")
        query = UsageQuery(
            start=start,
            end=end,
            group_by=tuple(group_by),
            filters=tuple(filters),
            granularity=granularity,
            time_zone=await self._zone(request.time_zone),
            organization_id=organization,
            limit=size,
        )
        await _checked(context, query)
        fingerprint = page_token.fingerprint(
            "usage", start, end, query.group_by, query.filters, granularity, query.time_zone,
            organization,
        )  # fmt: skip
        shape = (int, *(str for _ in query.group_by))
        last_seen = await position(context, self._tokens, request.page_token, fingerprint, shape)
        if last_seen is not None:
            query = replace(query, after=tuple(last_seen))
        page = await read_within_deadline(self._storage, context, lambda c, s: usage(c, query, s))
        response = query_pb.QueryUsageResponse(
            totals=query_pb.UsageTotals(
                event_count=page.totals.events,
                cost=to_money(page.totals.cost),
                late_event_count=page.totals.late_events,
                late_cost=to_money(page.totals.late_cost),
            )
        )
        for row in page.rows:
            line = response.lines.add(
                group_values=row.keys,
                event_count=row.events,
                quantities=pb.Usage(**row.quantities),
                cost=to_money(row.cost),
                late_event_count=row.late_events,
                late_cost=to_money(row.late_cost),
            )
            if row.bucket_start is not None:
                line.bucket_start_time.FromDatetime(row.bucket_start)
        if page.has_more:
            last = page.rows[-1].sort_key()
            response.next_page_token = self._tokens.encode(
                [v if isinstance(v, int) else str(v) for v in last], fingerprint
            )
        return response

    async def GetCostSummary(  # noqa: N802 (gRPC method name)
        self, request: query_pb.GetCostSummaryRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.GetCostSummaryResponse:
        start, end = _range(request)
        organization = await abort_if_foreign(context, request.organization_id)
        granularity = _GRANULARITIES.get(request.granularity, "invalid") or "month"
        query = UsageQuery(
            start=start,
            end=end,
            group_by=("operation",),
            granularity=granularity,
            time_zone=await self._zone(request.time_zone),
            organization_id=organization,
            limit=MAX_PAGE_SIZE,
        )
        await _checked(context, query)
        period = _PERIOD_SECONDS[granularity]
        if (end - start).total_seconds() / period > MAX_PERIODS:
            await _invalid(context, f"end_time: a summary covers at most {MAX_PERIODS} periods")

        def compute(
            client: Client, seconds: float | None
        ) -> tuple[list[UsagePage], dict[int, Decimal]]:
            pages = [usage(client, query, seconds)]
            while pages[-1].has_more:
                after = pages[-1].rows[-1].sort_key()
                pages.append(usage(client, replace(query, after=after), seconds))
            return pages, rerating_adjustments(client, query, seconds)

        pages, adjustments = await read_within_deadline(self._storage, context, compute)
        periods: dict[int, query_pb.CostSummaryPeriod] = {}
        sums: dict[int, dict[str, Decimal | int]] = {}
        for row in (row for page in pages for row in page.rows):
            assert row.bucket_start is not None
            bucket = int(row.bucket_start.timestamp())
            slot = sums.setdefault(bucket, _zero_period())
            kind = "subscription" if row.keys[0] == SUBSCRIPTION else "usage"
            slot[kind] += row.cost
            slot["late"] += row.late_cost
            slot["events"] += row.events
            slot["late_events"] += row.late_events
        for bucket, delta in adjustments.items():
            sums.setdefault(bucket, _zero_period())["adjustment"] += delta
        total = _zero_period()
        for bucket in sorted(sums):
            slot = sums[bucket]
            periods[bucket] = _period(slot, datetime.fromtimestamp(bucket, UTC))
            for name, value in slot.items():
                total[name] += value
        return query_pb.GetCostSummaryResponse(
            periods=[periods[b] for b in sorted(periods)], total=_period(total, None)
        )

    async def ExportUsage(  # noqa: N802 (gRPC method name)
        self, request: query_pb.ExportUsageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[query_pb.ExportUsageResponse]:
        start, end = _range(request)
        organization = await abort_if_foreign(context, request.organization_id)
        dimensions = ["organization", "department", "service", "provider", "model"]
        dimensions += ["operation", "purpose"] + (["user"] if request.include_users else [])
        query = UsageQuery(
            start=start,
            end=end,
            group_by=tuple(dimensions),
            granularity="day",
            time_zone=await self._zone(request.time_zone),
            organization_id=organization,
            limit=EXPORT_CHUNK,
        )
        await _checked(context, query)
        if self._prices is not None:
            await asyncio.to_thread(self._prices.refresh)
        catalog = self._prices.catalog if self._prices is not None else None
        usage_query = query
        while True:  # the usage charges, then the corrections of closed months
            charges, more = await read_within_deadline(
                self._storage, context, partial(usage_charges, usage_query)
            )
            lines = usage_lines(charges, dimensions, query.time_zone, catalog)
            yield query_pb.ExportUsageResponse(lines=lines)
            if not more:
                break
            usage_query = replace(usage_query, after=charges[-1].sort_key())
        while True:
            corrections, more = await read_within_deadline(
                self._storage, context, partial(correction_charges, query)
            )
            if corrections:
                lines = correction_lines(corrections, dimensions, query.time_zone)
                yield query_pb.ExportUsageResponse(lines=lines)
            if not more:
                return
            query = replace(query, after=corrections[-1].sort_key())

    async def GetCostBreakdown(  # noqa: N802 (gRPC method name)
        self, request: query_pb.GetCostBreakdownRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.GetCostBreakdownResponse:
        # A question asked again is answered before any parsing. The key holds the caller's
        # tenant scope, so one organisation's answer never reaches another; a request only
        # gets into the cache once it passed every check below.
        try:
            key = (tenant_scope(request.organization_id), request.SerializeToString())
        except TenantError:
            pass  # refused below, after the argument checks, as any foreign request is
        else:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        start, end = _range(request)
        dimension = _COST_DIMENSIONS.get(request.group_by)
        if dimension is None:
            await _invalid(
                context, "group_by: must be a CostDimension other than COST_DIMENSION_UNSPECIFIED"
            )
        size = await page_size(context, request.page_size)
        organization = await abort_if_foreign(context, request.organization_id)
        fingerprint = page_token.fingerprint(start, end, dimension, organization)
        last_seen = await position(context, self._tokens, request.page_token, fingerprint, (str,))
        query = UsageQuery(
            start=start,
            end=end,
            group_by=(str(dimension),),
            organization_id=organization,
            after=None if last_seen is None else (0, str(last_seen[0])),  # no time bucket
            limit=size,
        )
        return await self._cache.get_or_compute(
            (organization, request.SerializeToString()),
            lambda: self._breakdown(query, fingerprint, context),
            lambda: self._breakdown(query, fingerprint, None),
        )

    async def _breakdown(
        self, query: UsageQuery, fingerprint: str, context: grpc.aio.ServicerContext | None
    ) -> query_pb.GetCostBreakdownResponse:
        """The breakdown within the call's deadline (DEADLINE_EXCEEDED past it), or, for a
        background refresh (no context), within REFRESH_SECONDS."""

        def read(client: Client, seconds: float | None) -> UsagePage:
            return usage(client, query, seconds, quantities=False)  # cost and events suffice

        if context is None:
            page = await self._storage.run(lambda c: read(c, REFRESH_SECONDS))
        else:
            page = await read_within_deadline(self._storage, context, read)
        response = query_pb.GetCostBreakdownResponse(total_cost=to_money(page.totals.cost))
        for row in page.rows:
            response.lines.add(key=row.keys[0], cost=to_money(row.cost), event_count=row.events)
        if page.has_more:
            response.next_page_token = self._tokens.encode([page.rows[-1].keys[0]], fingerprint)
        return response


def _zero_period() -> dict[str, Decimal | int]:
    return {"subscription": Decimal(0), "usage": Decimal(0), "late": Decimal(0),
            "adjustment": Decimal(0), "events": 0, "late_events": 0}  # fmt: skip


def _period(slot: dict[str, Decimal | int], start: datetime | None) -> query_pb.CostSummaryPeriod:
    subscription, metered = Decimal(slot["subscription"]), Decimal(slot["usage"])
    period = query_pb.CostSummaryPeriod(
        total_cost=to_money(subscription + metered),
        subscription_cost=to_money(subscription),
        usage_cost=to_money(metered),
        late_correction_cost=to_money(Decimal(slot["late"])),
        rerating_adjustment=to_money(Decimal(slot["adjustment"])),
        event_count=int(slot["events"]),
        late_event_count=int(slot["late_events"]),
    )
    if start is not None:
        period.start_time.FromDatetime(start)
    return period


def _range(
    request: query_pb.QueryUsageRequest
    | query_pb.GetCostSummaryRequest
    | query_pb.ExportUsageRequest
    | query_pb.GetCostBreakdownRequest,
) -> tuple[datetime, datetime]:
    """The request's [start_time, end_time); ArgumentError (INVALID_ARGUMENT) names the field."""
    return time_range(
        request.start_time if request.HasField("start_time") else None,
        request.end_time if request.HasField("end_time") else None,
    )


async def _checked(context: grpc.aio.ServicerContext, query: UsageQuery) -> None:
    try:
        check(query)
    except UsageQueryError as exc:
        await _invalid(context, str(exc))


async def _invalid(context: grpc.aio.ServicerContext, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("unreachable")
