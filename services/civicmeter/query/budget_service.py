"""civicmeter.budget.v1.BudgetService: budget statuses over the billing rollups (core.budgets),
for the budgets of the policy in force (reloaded when its file changes)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from google.type import date_pb2, decimal_pb2

from civicmeter.api.budget.v1 import budget_service_pb2 as budget_pb
from civicmeter.api.budget.v1 import budget_service_pb2_grpc as budget_grpc
from civicmeter.api.money import to_money
from civicmeter.api.severity import SEVERITY_VALUES
from civicmeter.core.budgets import (
    PERIOD_KINDS,
    BudgetStatus,
    PeriodKind,
    lookback_days,
    statuses,
)
from civicmeter.core.store.budgets import load_ledger
from civicmeter.core.store.connection import Storage
from civicmeter.policy.organization import PolicySet
from civicmeter.query import page_token
from civicmeter.query.access import abort_if_foreign
from civicmeter.query.arguments import time_field
from civicmeter.query.deadline import read_within_deadline
from civicmeter.query.paging import page_size, position

SERVICE_NAME = budget_pb.DESCRIPTOR.services_by_name["BudgetService"].full_name
# A caller's clock may run a little ahead of ours; further ahead, as_of_time is refused.
CLOCK_SKEW = timedelta(minutes=5)
_KINDS: dict[int, tuple[PeriodKind, ...]] = {
    budget_pb.BUDGET_PERIOD_UNSPECIFIED: PERIOD_KINDS,
    budget_pb.BUDGET_PERIOD_MONTH: ("month",),
    budget_pb.BUDGET_PERIOD_FISCAL_YEAR: ("year",),
}
_PERIODS: dict[PeriodKind, budget_pb.BudgetPeriod.ValueType] = {
    "month": budget_pb.BUDGET_PERIOD_MONTH,
    "year": budget_pb.BUDGET_PERIOD_FISCAL_YEAR,
}


class BudgetService(budget_grpc.BudgetServiceServicer):
    def __init__(
        self,
        storage: Storage,
        policies: Callable[[], PolicySet],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tokens: page_token.PageTokens | None = None,
    ) -> None:
        self._storage = storage
        self._policies = policies
        self._clock = clock
        self._tokens = tokens or page_token.process_tokens()

    async def ListBudgetStatuses(  # noqa: N802 (gRPC method name)
        self, request: budget_pb.ListBudgetStatusesRequest, context: grpc.aio.ServicerContext
    ) -> budget_pb.ListBudgetStatusesResponse:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        kinds = _KINDS.get(request.period)
        if kinds is None:
            await context.abort(invalid, f"period: {request.period} is not a BudgetPeriod")
            raise AssertionError("unreachable")
        limit = await page_size(context, request.page_size)
        now = self._clock()
        given = request.HasField("as_of_time")
        as_of = time_field("as_of_time", request.as_of_time) if given else now
        if as_of > now + CLOCK_SKEW:
            await context.abort(invalid, "as_of_time: must not be in the future")
        organization = await abort_if_foreign(context, request.organization_id)
        requested = request.as_of_time.ToMilliseconds() if given else 0
        fingerprint = page_token.fingerprint(organization, requested, request.period)
        after: tuple[str, int, str] | None = None
        last_seen = await position(
            context, self._tokens, request.page_token, fingerprint, (int, str, int, str)
        )
        if last_seen is not None:
            as_of_ms, org, kind, department = last_seen
            # A token this server signed: page 1's moment, which passed the checks above.
            as_of = datetime.fromtimestamp(int(as_of_ms) / 1000, UTC)
            after = (str(org), int(kind), str(department))
        policies = self._policies()
        days = lookback_days(policies)
        ledger = await read_within_deadline(
            self._storage, context, lambda c, s: load_ledger(c, as_of, organization, days, s)
        )
        found = [
            s
            for s in statuses(ledger, policies, organization, kinds)
            if after is None or s.budget.sort_key > after
        ]
        response = budget_pb.ListBudgetStatusesResponse(
            budget_statuses=[_message(s) for s in found[:limit]]
        )
        response.as_of_time.FromDatetime(as_of)
        if len(found) > limit:
            last = found[limit - 1].budget.sort_key
            response.next_page_token = self._tokens.encode(
                [round(as_of.timestamp() * 1000), *last], fingerprint
            )
        return response


def _message(s: BudgetStatus) -> budget_pb.BudgetStatus:
    budget = s.budget
    message = budget_pb.BudgetStatus(
        organization_id=budget.organization_id,
        department_id=budget.department_id,
        period=_PERIODS[budget.kind],
        budget_amount=to_money(budget.amount),
        spent_amount=to_money(s.spent),
        remaining_amount=to_money(s.remaining),
        percent_spent=decimal_pb2.Decimal(value=str(s.percent)),
    )
    message.period_start_time.FromDatetime(s.period.start_time)
    message.period_end_time.FromDatetime(s.period.end_time)
    message.spent_through_time.FromDatetime(s.through)
    for t in s.thresholds:
        message.thresholds.add(
            percent=t.percent,
            severity=SEVERITY_VALUES[t.severity],
            amount=to_money(t.amount),
            crossed=t.crossed,
        )
    forecast = s.forecast
    if forecast is not None:
        message.forecast.CopyFrom(
            budget_pb.BudgetForecast(
                projected_spend=to_money(forecast.projected_spend),
                projected_overrun=to_money(forecast.projected_overrun),
                daily_run_rate=to_money(forecast.daily_run_rate),
                run_rate_days=forecast.run_rate_days,
                upcoming_seat_charges=to_money(forecast.recurring_charges),
            )
        )
        day = forecast.exhaustion_date
        if day is not None:
            message.forecast.projected_exhaustion_date.CopyFrom(
                date_pb2.Date(year=day.year, month=day.month, day=day.day)
            )
    return message
