"""Typed answers of QueryUsage, GetCostSummary and ExportUsage, built from their messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.core.money import from_money
from civicmeter.query.v1 import query_service_pb2 as query_pb

UsageDimension = Literal[
    "organization", "department", "user", "service", "provider", "model", "operation", "purpose"
]
USAGE_DIMENSIONS: dict[str, query_pb.Dimension.ValueType] = {
    "organization": query_pb.DIMENSION_ORGANIZATION,
    "department": query_pb.DIMENSION_DEPARTMENT,
    "user": query_pb.DIMENSION_USER,
    "service": query_pb.DIMENSION_SERVICE,
    "provider": query_pb.DIMENSION_PROVIDER,
    "model": query_pb.DIMENSION_MODEL,
    "operation": query_pb.DIMENSION_OPERATION,
    "purpose": query_pb.DIMENSION_PURPOSE,
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
    """One charge keyed by its FOCUS column names (x_ columns are civicmeter's own): what a
    csv.DictWriter or a dataframe takes as it is."""
    return {
        "BilledCost": from_money(line.billed_cost),
        "EffectiveCost": from_money(line.effective_cost),
        "ListCost": from_money(line.list_cost),
        "ContractedCost": from_money(line.contracted_cost),
        "BillingCurrency": line.billing_currency,
        "BillingPeriodStart": _time(line.billing_period_start),
        "BillingPeriodEnd": _time(line.billing_period_end),
        "ChargePeriodStart": _time(line.charge_period_start),
        "ChargePeriodEnd": _time(line.charge_period_end),
        "ChargeCategory": line.charge_category,
        "ChargeClass": line.charge_class or None,
        "ChargeDescription": line.charge_description,
        "ChargeFrequency": line.charge_frequency,
        "ConsumedQuantity": Decimal(line.consumed_quantity),
        "ConsumedUnit": line.consumed_unit,
        "PricingQuantity": Decimal(line.pricing_quantity),
        "PricingUnit": line.pricing_unit,
        "ProviderName": line.provider_name,
        "PublisherName": line.publisher_name,
        "InvoiceIssuerName": line.invoice_issuer_name,
        "ServiceName": line.service_name,
        "ServiceCategory": line.service_category,
        "SkuId": line.sku_id,
        "BillingAccountId": line.billing_account_id,
        "SubAccountId": line.sub_account_id,
        "Tags": dict(line.tags),
        "x_UserId": line.x_user_id or None,
        "x_Operation": line.x_operation,
        "x_Purpose": line.x_purpose,
        "x_EventCount": line.x_event_count,
    }


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)
