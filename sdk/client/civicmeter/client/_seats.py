"""Seats as the client hands them out: dates as `date`, money as Decimal KRW."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from google.type import date_pb2

from civicmeter.api.money import from_money
from civicmeter.api.seat.v1 import seat_service_pb2 as seat_pb

SeatDimension = Literal["service", "department"]
SEAT_DIMENSIONS: dict[str, seat_pb.SeatDimension.ValueType] = {
    "service": seat_pb.SEAT_DIMENSION_SERVICE,
    "department": seat_pb.SEAT_DIMENSION_DEPARTMENT,
}


@dataclass(frozen=True)
class Seat:
    organization_id: str
    seat_id: str
    department_id: str
    user_id: str
    provider_name: str
    service_id: str
    plan: str
    start: date
    end: date | None  # None: open-ended
    monthly_fee_krw: Decimal | None  # None: the month is not charged (yet)
    price_version: str
    last_used: date | None  # None: never used up to the day asked about
    idle: bool


@dataclass(frozen=True)
class SeatSummaryLine:
    key: str  # a service or department id; "" for the total
    seats: int
    active_seats: int
    idle_seats: int
    seat_cost_krw: Decimal
    usage_cost_krw: Decimal
    active_users: int
    cost_per_active_user_krw: Decimal | None  # None: no active user


@dataclass(frozen=True)
class SeatSummary:
    lines: list[SeatSummaryLine]
    total: SeatSummaryLine


def _day(value: date_pb2.Date) -> date:
    return date(value.year, value.month, value.day)


def seat_of(message: seat_pb.Seat) -> Seat:
    return Seat(
        organization_id=message.organization_id,
        seat_id=message.seat_id,
        department_id=message.department_id,
        user_id=message.user_id,
        provider_name=message.provider_name,
        service_id=message.service_id,
        plan=message.plan,
        start=_day(message.start_date),
        end=_day(message.end_date) if message.HasField("end_date") else None,
        monthly_fee_krw=from_money(message.monthly_fee)
        if message.HasField("monthly_fee")
        else None,
        price_version=message.price_version,
        last_used=_day(message.last_used_date) if message.HasField("last_used_date") else None,
        idle=message.idle,
    )


def summary_line_of(message: seat_pb.SeatSummaryLine) -> SeatSummaryLine:
    return SeatSummaryLine(
        key=message.key,
        seats=message.seats,
        active_seats=message.active_seats,
        idle_seats=message.idle_seats,
        seat_cost_krw=from_money(message.seat_cost),
        usage_cost_krw=from_money(message.usage_cost),
        active_users=message.active_users,
        cost_per_active_user_krw=from_money(message.cost_per_active_user)
        if message.HasField("cost_per_active_user")
        else None,
    )
