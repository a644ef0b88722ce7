"""Usage rows as FinOps FOCUS 1.1 charges (https://focus.finops.org), so finance tools that read
FOCUS take civicmeter's export unchanged.

One line per day and (organisation, department, service, provider, model or plan, operation,
purpose[, user]). Seat subscriptions are Purchase charges billed Recurring, metered use is
Usage-Based. The cost of events that arrived after the allowed lateness is split into its own
line with ChargeClass "Correction", as FOCUS asks for changes to a charge period already
reported. List, contracted, effective and billed cost are all the rated cost: civicmeter rates
at the contracted price and knows no discounts or commitments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from civicmeter.core.money import KRW, to_money
from civicmeter.core.seat_store import SUBSCRIPTION
from civicmeter.query.usage import UsageQuery, UsageRow
from civicmeter.query.v1 import query_service_pb2 as query_pb
from civicmeter.usage.v1 import usage_event_pb2 as pb

SERVICE_CATEGORY = "AI and Machine Learning"
# The quantity a line is consumed in: the first the line has, in this order.
_UNITS: tuple[tuple[tuple[str, ...], str, int], ...] = (
    (("seat_months",), "Seat-Months", 1),
    (("input_tokens", "output_tokens", "cache_read_input_tokens",
      "cache_creation_input_tokens", "reasoning_tokens"), "Tokens", 1),
    (("images",), "Images", 1),
    (("audio_milliseconds",), "Audio Seconds", 1000),
    (("video_milliseconds",), "Video Seconds", 1000),
    (("characters",), "Characters", 1),
    (("requests",), "Requests", 1),
)  # fmt: skip


def focus_lines(
    rows: Sequence[UsageRow], dimensions: Sequence[str], query: UsageQuery
) -> list[query_pb.FocusLine]:
    tz = ZoneInfo(query.time_zone)
    out: list[query_pb.FocusLine] = []
    for row in rows:
        values = dict(zip(dimensions, row.keys, strict=True))
        assert row.bucket_start is not None  # exports are bucketed by day
        day = row.bucket_start.astimezone(tz)
        if row.events > row.late_events or row.cost != row.late_cost:
            out.append(_line(values, day, row.cost - row.late_cost, row, correction=False))
        if row.late_events or row.late_cost:
            out.append(_line(values, day, row.late_cost, row, correction=True))
    return out


def _line(
    values: dict[str, str], day: datetime, cost: Decimal, row: UsageRow, *, correction: bool
) -> query_pb.FocusLine:
    subscription = values["operation"] == SUBSCRIPTION
    quantities = {} if correction else row.quantities
    quantity, unit = _consumed(quantities)
    model = values["model"]
    money = to_money(cost)
    line = query_pb.FocusLine(
        billed_cost=money,
        effective_cost=money,
        list_cost=money,
        contracted_cost=money,
        billing_currency=KRW,
        charge_category="Purchase" if subscription else "Usage",
        charge_class="Correction" if correction else "",
        charge_description=" ".join(
            part for part in (values["service"], model, values["operation"]) if part
        ),
        charge_frequency="Recurring" if subscription else "Usage-Based",
        consumed_quantity=quantity,
        consumed_unit=unit,
        pricing_quantity=quantity,
        pricing_unit=unit,
        provider_name=values["provider"],
        publisher_name=values["provider"],
        invoice_issuer_name=values["provider"],
        service_name=values["service"],
        service_category=SERVICE_CATEGORY,
        sku_id="/".join(p for p in (values["provider"], values["service"], model) if p),
        billing_account_id=values["organization"],
        sub_account_id=values["department"],
        tags={k: v for k, v in (("purpose", values["purpose"]),) if v},
        x_user_id=values.get("user", ""),
        x_operation=values["operation"],
        x_purpose=values["purpose"],
        x_event_count=row.late_events if correction else row.events - row.late_events,
        x_quantities=pb.Usage(**quantities),
    )
    month = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    next_day = day + timedelta(days=1)  # wall-clock arithmetic: 23- and 25-hour days too
    for field, moment in (
        (line.charge_period_start, day),
        (line.charge_period_end, next_day),
        (line.billing_period_start, month),
        (line.billing_period_end, next_month),
    ):
        field.FromDatetime(moment.astimezone(UTC))
    return line


def _consumed(quantities: dict[str, int]) -> tuple[str, str]:
    for fields, unit, divisor in _UNITS:
        total = sum(quantities.get(f, 0) for f in fields)
        if total:
            return str(Decimal(total) / divisor), unit
    return "0", "Requests"
