from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Literal, Self

import grpc

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.query.v1 import query_service_pb2_grpc as query_grpc
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.api.severity import SEVERITY_VALUES, Severity
from civicmeter.client._budgets import BUDGET_PERIODS, BudgetPeriod, BudgetStatus, budget_status_of
from civicmeter.client._seats import (
    SEAT_DIMENSIONS,
    Seat,
    SeatDimension,
    SeatSummary,
    seat_of,
    summary_line_of,
)
from civicmeter.client._usage import (
    GRANULARITIES,
    USAGE_DIMENSIONS,
    CostSummary,
    Granularity,
    UsageDimension,
    UsageLine,
    UsageReport,
    focus_row,
    period_of,
    usage_line_of,
)

Dimension = Literal["organization", "department", "user", "service"]
_DIMENSIONS: dict[str, query_pb.CostDimension.ValueType] = {
    "organization": query_pb.COST_DIMENSION_ORGANIZATION,
    "department": query_pb.COST_DIMENSION_DEPARTMENT,
    "user": query_pb.COST_DIMENSION_USER,
    "service": query_pb.COST_DIMENSION_SERVICE,
}
State = Literal["open", "acknowledged", "resolved"]
_STATES: dict[str, alert_pb2.AlertState.ValueType] = {
    "open": alert_pb2.ALERT_STATE_OPEN,
    "acknowledged": alert_pb2.ALERT_STATE_ACKNOWLEDGED,
    "resolved": alert_pb2.ALERT_STATE_RESOLVED,
}


@dataclass(frozen=True)
class CostLine:
    key: str
    cost_krw: Decimal
    event_count: int


@dataclass(frozen=True)
class CostBreakdown:
    lines: list[CostLine]
    total_krw: Decimal


class CivicmeterClient:
    """An asyncio client of QueryService and AlertService over one channel."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: tuple[bytes, bytes] | None = None,  # (key, chain) for mutual TLS
        timeout_seconds: float = 30.0,
    ) -> None:
        if tls:
            key, chain = client_certificate or (None, None)
            credentials = grpc.ssl_channel_credentials(root_certificates, key, chain)
            self._channel = grpc.aio.secure_channel(target, credentials)
        else:
            self._channel = grpc.aio.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout_seconds
        self._query = query_grpc.QueryServiceStub(self._channel)
        self._alerts = alert_service_pb2_grpc.AlertServiceStub(self._channel)
        self._budgets = budget_grpc.BudgetServiceStub(self._channel)
        self._seats = seat_grpc.SeatServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def cost_breakdown(
        self,
        start: datetime,
        end: datetime,
        group_by: Dimension,
        organization_id: str = "",
        page_size: int = 1000,
    ) -> CostBreakdown:
        """Cost over [start, end) grouped by one dimension, every page gathered."""
        request = query_pb.GetCostBreakdownRequest(
            group_by=_DIMENSIONS[group_by], organization_id=organization_id,
            page_size=page_size)  # fmt: skip
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        lines: list[CostLine] = []
        while True:
            response: query_pb.GetCostBreakdownResponse = await self._query.GetCostBreakdown(
                request, metadata=self._metadata, timeout=self._timeout
            )
            lines += [CostLine(line.key, from_money(line.cost), line.event_count)
                      for line in response.lines]  # fmt: skip
            if not response.next_page_token:
                return CostBreakdown(lines, from_money(response.total_cost))
            request.page_token = response.next_page_token

    async def usage(
        self,
        start: datetime,
        end: datetime,
        *,
        group_by: Sequence[UsageDimension] = (),
        filters: Mapping[UsageDimension, Sequence[str]] | None = None,
        granularity: Granularity | None = None,
        time_zone: str = "",
        organization_id: str = "",
        page_size: int = 1000,
    ) -> UsageReport:
        """Usage and cost over [start, end), grouped, filtered and bucketed; every page."""
        request = query_pb.QueryUsageRequest(
            organization_id=organization_id,
            group_by=[USAGE_DIMENSIONS[d] for d in group_by],
            filters=[
                query_pb.DimensionFilter(dimension=USAGE_DIMENSIONS[d], values=list(v))
                for d, v in (filters or {}).items()
            ],
            granularity=GRANULARITIES[granularity],
            time_zone=time_zone,
            page_size=page_size,
        )
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        lines: list[UsageLine] = []
        while True:
            response: query_pb.QueryUsageResponse = await self._query.QueryUsage(
                request, metadata=self._metadata, timeout=self._timeout
            )
            lines += [usage_line_of(line, list(group_by)) for line in response.lines]
            if not response.next_page_token:
                totals = response.totals
                return UsageReport(
                    lines,
                    totals.event_count,
                    from_money(totals.cost),
                    totals.late_event_count,
                    from_money(totals.late_cost),
                )
            request.page_token = response.next_page_token

    async def cost_summary(
        self,
        start: datetime,
        end: datetime,
        *,
        granularity: Granularity = "month",
        time_zone: str = "",
        organization_id: str = "",
    ) -> CostSummary:
        """Cost per period: subscriptions, metered use, late corrections, re-rating."""
        request = query_pb.GetCostSummaryRequest(
            organization_id=organization_id, granularity=GRANULARITIES[granularity],
            time_zone=time_zone)  # fmt: skip
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        response: query_pb.GetCostSummaryResponse = await self._query.GetCostSummary(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return CostSummary([period_of(p) for p in response.periods], period_of(response.total))

    async def export_usage(
        self,
        start: datetime,
        end: datetime,
        *,
        time_zone: str = "",
        include_users: bool = False,
        organization_id: str = "",
    ) -> AsyncIterator[dict[str, object]]:
        """Daily charges in FOCUS columns, as they stream in (see focus_row)."""
        request = query_pb.ExportUsageRequest(
            organization_id=organization_id, time_zone=time_zone, include_users=include_users
        )
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        call = self._query.ExportUsage(request, metadata=self._metadata, timeout=self._timeout)
        async for chunk in call:
            for line in chunk.lines:
                yield focus_row(line)

    async def alerts(
        self,
        *,
        organization_id: str = "",
        state: State | None = None,
        min_severity: Severity | None = None,
        alert_types: Sequence[str] = (),
        page_size: int = 500,
    ) -> AsyncIterator[alert_pb2.Alert]:
        """Alerts newest first, page after page."""
        request = alert_service_pb2.ListAlertsRequest(
            filter=self._filter(organization_id, min_severity, alert_types),
            state=_STATES[state] if state else alert_pb2.ALERT_STATE_UNSPECIFIED,
            page_size=page_size)  # fmt: skip
        while True:
            response: alert_service_pb2.ListAlertsResponse = await self._alerts.ListAlerts(
                request, metadata=self._metadata, timeout=self._timeout
            )
            for alert in response.alerts:
                yield alert
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def acknowledge(
        self, organization_id: str, dedup_key: str, actor: str, *, resolve: bool = False
    ) -> alert_pb2.Alert:
        response: alert_service_pb2.AcknowledgeAlertResponse = (
            await self._alerts.AcknowledgeAlert(
                alert_service_pb2.AcknowledgeAlertRequest(
                    organization_id=organization_id, dedup_key=dedup_key, actor=actor,
                    state=_STATES["resolved" if resolve else "acknowledged"]),
                metadata=self._metadata, timeout=self._timeout))  # fmt: skip
        return response.alert

    async def watch_alerts(
        self,
        *,
        organization_id: str = "",
        cursor: str = "",
        replay_seconds: int = 0,
        min_severity: Severity | None = None,
        alert_types: Sequence[str] = (),
    ) -> AsyncGenerator[tuple[alert_pb2.Alert, str], None]:
        """Alerts as they open, each with the cursor to resume after it."""
        call = self._alerts.WatchAlerts(
            alert_service_pb2.WatchAlertsRequest(
                filter=self._filter(organization_id, min_severity, alert_types), cursor=cursor,
                replay_seconds=replay_seconds),
            metadata=self._metadata)  # fmt: skip
        try:
            async for message in call:
                yield message.alert, message.cursor
        finally:
            call.cancel()

    async def seats(
        self,
        *,
        organization_id: str = "",
        as_of: datetime | None = None,
        idle_days: int = 0,
        only_idle: bool = False,
        page_size: int = 500,
    ) -> AsyncIterator[Seat]:
        """Seats held on as_of's Asia/Seoul day (default today), page after page; idle_days 0
        is the server's default (30)."""
        request = seat_pb.ListSeatsRequest(
            organization_id=organization_id, idle_days=idle_days, only_idle=only_idle,
            page_size=page_size)  # fmt: skip
        if as_of is not None:
            request.as_of_time.FromDatetime(as_of)
        while True:
            response: seat_pb.ListSeatsResponse = await self._seats.ListSeats(
                request, metadata=self._metadata, timeout=self._timeout
            )
            for seat in response.seats:
                yield seat_of(seat)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def seat_summary(
        self,
        month: date,
        group_by: SeatDimension,
        *,
        organization_id: str = "",
        idle_days: int = 0,
        page_size: int = 1000,
    ) -> SeatSummary:
        """Seats, idle seats, cost and cost per active user in `month`'s Asia/Seoul month."""
        request = seat_pb.GetSeatSummaryRequest(
            organization_id=organization_id, group_by=SEAT_DIMENSIONS[group_by],
            idle_days=idle_days, page_size=page_size)  # fmt: skip
        request.month.year, request.month.month = month.year, month.month
        lines = []
        while True:
            response: seat_pb.GetSeatSummaryResponse = await self._seats.GetSeatSummary(
                request, metadata=self._metadata, timeout=self._timeout
            )
            lines += [summary_line_of(line) for line in response.lines]
            if not response.next_page_token:
                return SeatSummary(lines, summary_line_of(response.total))
            request.page_token = response.next_page_token

    async def budget_statuses(
        self,
        *,
        organization_id: str = "",
        as_of: datetime | None = None,
        period: BudgetPeriod | None = None,
        page_size: int = 100,
    ) -> list[BudgetStatus]:
        """Every budget's status in the month and fiscal year of `as_of` (default now), or
        only those of `period`, every page gathered."""
        kind = BUDGET_PERIODS[period] if period else budget_pb.BUDGET_PERIOD_UNSPECIFIED
        request = budget_pb.ListBudgetStatusesRequest(
            organization_id=organization_id, period=kind, page_size=page_size
        )
        if as_of is not None:
            request.as_of_time.FromDatetime(as_of)
        found: list[BudgetStatus] = []
        while True:
            response: budget_pb.ListBudgetStatusesResponse = (
                await self._budgets.ListBudgetStatuses(
                    request, metadata=self._metadata, timeout=self._timeout))  # fmt: skip
            found += [budget_status_of(status) for status in response.budget_statuses]
            if not response.next_page_token:
                return found
            request.page_token = response.next_page_token

    @staticmethod
    def _filter(
        organization_id: str, min_severity: Severity | None, alert_types: Sequence[str]
    ) -> alert_service_pb2.AlertFilter:
        return alert_service_pb2.AlertFilter(
            organization_id=organization_id,
            min_severity=SEVERITY_VALUES[min_severity]
            if min_severity
            else alert_pb2.SEVERITY_UNSPECIFIED,
            alert_types=list(alert_types),
        )
