"""civicmeter.seat.v1.SeatService: seats, idle seats and a month's seat summary over gRPC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import grpc
from google.type import date_pb2

from civicmeter.api.money import to_money
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb
from civicmeter.api.seat.v1 import seat_service_pb2_grpc as seat_grpc
from civicmeter.api.seoul import SEOUL
from civicmeter.core.store.connection import Storage
from civicmeter.query import page_token
from civicmeter.query.access import abort_if_foreign
from civicmeter.query.arguments import month_field, time_field
from civicmeter.query.deadline import read_within_deadline
from civicmeter.query.paging import page_size, position
from civicmeter.query.seat_report import (
    DEFAULT_IDLE_DAYS,
    MAX_IDLE_DAYS,
    SeatListQuery,
    SeatStatus,
    SummaryLine,
    list_seats,
    seat_summary,
)

SERVICE_NAME = seat_pb.DESCRIPTOR.services_by_name["SeatService"].full_name
_DIMENSIONS = {
    seat_pb.SEAT_DIMENSION_SERVICE: "service",
    seat_pb.SEAT_DIMENSION_DEPARTMENT: "department",
}


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _seat(status: SeatStatus) -> seat_pb.Seat:
    seat = status.seat
    message = seat_pb.Seat(
        organization_id=seat.organization_id,
        seat_id=seat.seat_id,
        department_id=seat.department_id,
        user_id=seat.user_id,
        provider_name=seat.provider_name,
        service_id=seat.service_id,
        plan=seat.plan,
        start_date=_date(seat.start),
        price_version=status.price_version,
        idle=status.idle,
    )
    if seat.end is not None:
        message.end_date.CopyFrom(_date(seat.end))
    if status.monthly_fee is not None:
        message.monthly_fee.CopyFrom(to_money(status.monthly_fee))
    if status.last_used is not None:
        message.last_used_date.CopyFrom(_date(status.last_used))
    return message


def _line(line: SummaryLine) -> seat_pb.SeatSummaryLine:
    message = seat_pb.SeatSummaryLine(
        key=line.key,
        seats=line.seats,
        active_seats=line.active_seats,
        idle_seats=line.idle_seats,
        seat_cost=to_money(line.seat_cost),
        usage_cost=to_money(line.usage_cost),
        active_users=line.active_users,
    )
    per_user = line.cost_per_active_user
    if per_user is not None:
        message.cost_per_active_user.CopyFrom(to_money(per_user))
    return message


class SeatService(seat_grpc.SeatServiceServicer):
    def __init__(
        self,
        storage: Storage,
        today: Callable[[], date] | None = None,
        tokens: page_token.PageTokens | None = None,
    ) -> None:
        self._storage = storage
        self._today = today or (lambda: datetime.now(SEOUL).date())
        self._tokens = tokens or page_token.process_tokens()

    async def ListSeats(  # noqa: N802 (gRPC method name)
        self, request: seat_pb.ListSeatsRequest, context: grpc.aio.ServicerContext
    ) -> seat_pb.ListSeatsResponse:
        size = await _check_sizes(context, request.page_size, request.idle_days)
        organization = await abort_if_foreign(context, request.organization_id)
        idle_days = request.idle_days or DEFAULT_IDLE_DAYS
        # Without as_of_time the day is today's: the first page fixes it for the pages after.
        given = (
            time_field("as_of_time", request.as_of_time) if request.HasField("as_of_time") else None
        )
        fingerprint = page_token.fingerprint(
            organization, given and given.isoformat(), idle_days, request.only_idle
        )
        as_of = given.astimezone(SEOUL).date() if given else self._today()
        after = None
        last_seen = await position(
            context, self._tokens, request.page_token, fingerprint, (int, str, str)
        )
        if last_seen is not None:
            ordinal, org, seat_id = last_seen
            # A token this server signed: page 1's day, a real date.
            as_of, after = date.fromordinal(int(ordinal)), (str(org), str(seat_id))
        query = SeatListQuery(
            organization_id=organization,
            as_of=as_of,
            idle_days=idle_days,
            only_idle=request.only_idle,
            after=after,
            limit=size,
        )
        page = await read_within_deadline(
            self._storage, context, lambda c, s: list_seats(c, query, s)
        )
        response = seat_pb.ListSeatsResponse(seats=[_seat(status) for status in page.seats])
        if page.has_more:
            last = page.seats[-1].seat
            response.next_page_token = self._tokens.encode(
                [as_of.toordinal(), last.organization_id, last.seat_id], fingerprint
            )
        return response

    async def GetSeatSummary(  # noqa: N802 (gRPC method name)
        self, request: seat_pb.GetSeatSummaryRequest, context: grpc.aio.ServicerContext
    ) -> seat_pb.GetSeatSummaryResponse:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        size = await _check_sizes(context, request.page_size, request.idle_days)
        dimension = _DIMENSIONS.get(request.group_by)
        if dimension is None:
            await context.abort(
                invalid, "group_by: must be a SeatDimension other than SEAT_DIMENSION_UNSPECIFIED"
            )
        if not request.HasField("month"):
            await context.abort(invalid, "month: is required (year and month)")
        month = month_field("month", request.month)
        organization = await abort_if_foreign(context, request.organization_id)
        idle_days = request.idle_days or DEFAULT_IDLE_DAYS
        fingerprint = page_token.fingerprint(organization, month, dimension, idle_days)
        last_seen = await position(context, self._tokens, request.page_token, fingerprint, (str,))
        after = None if last_seen is None else str(last_seen[0])
        today = self._today()
        summary = await read_within_deadline(
            self._storage,
            context,
            lambda c, s: seat_summary(c, organization, month, str(dimension), idle_days, today, s),
        )
        lines = [line for line in summary.lines if after is None or line.key > after]
        response = seat_pb.GetSeatSummaryResponse(
            lines=[_line(line) for line in lines[:size]], total=_line(summary.total)
        )
        if len(lines) > size:
            response.next_page_token = self._tokens.encode([lines[size - 1].key], fingerprint)
        return response


async def _check_sizes(context: grpc.aio.ServicerContext, requested: int, idle_days: int) -> int:
    """The page size, once page_size and then idle_days are checked."""
    size = await page_size(context, requested)
    if not 0 <= idle_days <= MAX_IDLE_DAYS:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"idle_days: must be between 0 and {MAX_IDLE_DAYS}"
        )
    return size
