"""Typed answers of QueryUsage, GetCostSummary and ExportUsage, built from their messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.api.money import from_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb

UsageDimension = Literal[
    "organization", "department", "user", "service", "provider", "model", "operation", "purpose",
    "decision"]  # fmt: skip
USAGE_DIMENSIONS: dict[str, query_pb.Dimension.ValueType] = {
    "organization": query_pb.DIMENSION_ORGANIZATION,
    "department": query_pb.DIMENSION_DEPARTMENT,
    "user": query_pb.DIMENSION_USER,
    "service": query_pb.DIMENSION_SERVICE,
    "provider": query_pb.DIMENSION_PROVIDER,
    "model": query_pb.DIMENSION_MODEL,
    "operation": query_pb.DIMENSION_OPERATION,
    "purpose": query_pb.DIMENSION_PURPOSE,
    "decision": query_pb.DIMENSION_DECISION,
}
Granularity = Literal["hour", "day", "month"]
GRANULARITIES: dict[str | None, query_pb.Granularity.ValueType] = {
    None: query_pb.GRANULARITY_UNSPECIFIED,
    "hour": query_pb.GRANULARITY_HOUR,
    "day": query_pb.GRANULARITY_DAY,
    "month": query_pb.GRANULARITY_MONTH,
}


@dataclass(frozen=True)
class UsageLine:
    bucket_start: datetime | None  # None without a granularity
    group: dict[str, str]  # dimension -> value, for the dimensions grouped by
    event_count: int
    quantities: dict[str, int]  # every metered quantity (input_tokens, seat_months, ...)
    cost_krw: Decimal
    late_event_count: int
    late_cost_krw: Decimal


@dataclass(frozen=True)
class UsageReport:
    lines: list[UsageLine]
    event_count: int
    total_krw: Decimal
    late_event_count: int
    late_cost_krw: Decimal


@dataclass(frozen=True)
class CostPeriod:
    start: datetime | None  # None for the whole range
    total_krw: Decimal
    subscription_krw: Decimal
    usage_krw: Decimal
    late_correction_krw: Decimal
    rerating_adjustment_krw: Decimal
    event_count: int
    late_event_count: int


@dataclass(frozen=True)
class CostSummary:
    periods: list[CostPeriod]
    total: CostPeriod


def usage_line_of(line: query_pb.UsageLine, group_by: list[str]) -> UsageLine:
    return UsageLine(
        bucket_start=_time(line.bucket_start_time) if line.HasField("bucket_start_time") else None,
        group=dict(zip(group_by, line.group_values, strict=True)),
        event_count=line.event_count,
        quantities={f.name: value for f, value in line.quantities.ListFields()},
        cost_krw=from_money(line.cost),
        late_event_count=line.late_event_count,
        late_cost_krw=from_money(line.late_cost),
    )


def period_of(period: query_pb.CostSummaryPeriod) -> CostPeriod:
    return CostPeriod(
        start=_time(period.start_time) if period.HasField("start_time") else None,
        total_krw=from_money(period.total_cost),
        subscription_krw=from_money(period.subscription_cost),
        usage_krw=from_money(period.usage_cost),
        late_correction_krw=from_money(period.late_correction_cost),
        rerating_adjustment_krw=from_money(period.rerating_adjustment),
        event_count=period.event_count,
        late_event_count=period.late_event_count,
    )


def focus_row(line: query_pb.FocusLine) -> dict[str, object]:
    """One charge keyed by its FOCUS column names (x_ columns are civicmeter's own), ready for
    csv.DictWriter: money and quantities as Decimal, times as FOCUS writes them
    (2024-05-31T15:00:00Z), Tags as JSON text, null as None."""
    return {
        "BilledCost": _fractional(from_money(line.billed_cost)),
        "EffectiveCost": _fractional(from_money(line.effective_cost)),
        "ListCost": _fractional(from_money(line.list_cost)),
        "ContractedCost": _fractional(from_money(line.contracted_cost)),
        "BillingCurrency": line.billing_currency,
        "BillingPeriodStart": focus_time(line.billing_period_start),
        "BillingPeriodEnd": focus_time(line.billing_period_end),
        "ChargePeriodStart": focus_time(line.charge_period_start),
        "ChargePeriodEnd": focus_time(line.charge_period_end),
        "ChargeCategory": line.charge_category,
        "ChargeClass": line.charge_class or None,
        "ChargeDescription": line.charge_description,
        "ChargeFrequency": line.charge_frequency,
        "ConsumedQuantity": _decimal(line.consumed_quantity),
        "ConsumedUnit": line.consumed_unit or None,
        "PricingQuantity": _decimal(line.pricing_quantity),
        "PricingUnit": line.pricing_unit or None,
        "PricingCategory": line.pricing_category or None,
        "ListUnitPrice": _decimal(line.list_unit_price),
        "ContractedUnitPrice": _decimal(line.contracted_unit_price),
        "ProviderName": line.provider_name,
        "PublisherName": line.publisher_name,
        "InvoiceIssuerName": line.invoice_issuer_name,
        "ServiceName": line.service_name,
        "ServiceCategory": line.service_category,
        "ServiceSubcategory": line.service_subcategory or None,
        "SkuId": line.sku_id or None,
        "SkuPriceId": line.sku_price_id or None,
        "SkuMeter": line.sku_meter or None,
        "SkuPriceDetails": line.sku_price_details or None,
        "InvoiceId": line.invoice_id or None,
        "CommitmentDiscountStatus": None,  # civicmeter knows no commitment discounts
        "BillingAccountId": line.billing_account_id,
        "BillingAccountName": line.billing_account_name,
        "SubAccountId": line.sub_account_id,
        "SubAccountName": line.sub_account_name,
        "Tags": json.dumps(dict(sorted(line.tags.items())), ensure_ascii=False),
        "x_UserId": line.x_user_id or None,
        "x_Operation": line.x_operation,
        "x_Purpose": line.x_purpose or None,
        "x_PriceVersion": line.x_price_version or None,
        "x_EventCount": line.x_event_count,
    }


def focus_time(ts: Timestamp) -> str:
    """A FOCUS date-time: UTC, to the second, with a Z."""
    return _time(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decimal(text: str) -> Decimal | None:
    return _fractional(Decimal(text)) if text else None


def _fractional(value: Decimal) -> Decimal:
    """The value with at least one decimal place (800.0, not 800), so that a CSV reader that
    guesses column types reads a decimal, as FOCUS types these columns, not an integer."""
    return value if int(value.as_tuple().exponent) < 0 else value.quantize(_TENTH)


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


_TENTH = Decimal("0.1")
FOCUS_COLUMNS: tuple[str, ...] = tuple(focus_row(query_pb.FocusLine()))
