"""Ledger charges as FinOps FOCUS 1.2 lines (https://focus.finops.org), so finance tools that
read FOCUS take civicmeter's export unchanged.

A usage charge (a day's events of one group and price version, query/focus_charges.py) becomes
one line per priced unit: input and output tokens, images, seconds of audio, seat-months, ...
each a SKU price of its own, so that PricingQuantity x ContractedUnitPrice gives the line's
ContractedCost. Seat subscriptions are Purchase charges billed Recurring (no ConsumedQuantity),
metered use is Usage-Based. Late-arriving events are ordinary usage of their day.

Unit prices come from the price catalog by the price version that rated the events (never by
time: a version added later does not change what was charged): ContractedUnitPrice is the price
the events were rated at (the organisation's contract where it priced the unit), ListUnitPrice
the published version's, both in KRW at the FX rate of the events' Seoul date. ContractedCost and
ListCost are those prices times the quantity; BilledCost and EffectiveCost are what the ledger
holds, so they add up to the rated cost exactly (rounding of each event's cost to the stored
precision lands on the charge's largest line). A charge whose version the catalog does not
know stays one line without unit prices.

A re-rating delta made after the events' billing month closed is a Correction: an Adjustment
(of the price, not of the use) per day and group, billed in the month it was made, with no
quantities or unit prices. Every line names its invoice: the organisation's statement of the
billing month.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from civicmeter.api.money import KRW, quantize_cost, to_money
from civicmeter.api.query.v1 import query_service_pb2 as query_pb
from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import ANY_MODEL, CONTRACT_MARK, Price, PriceCatalog, PriceTable
from civicmeter.core.store.seats import SUBSCRIPTION
from civicmeter.query.focus_charges import CorrectionCharge, UsageCharge

SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Generative AI"
PRICING_CATEGORY = "Standard"


@dataclass(frozen=True)
class Meter:
    name: str  # SkuMeter
    unit: str  # PricingUnit and ConsumedUnit
    per_field: int  # Usage field units in one pricing unit (milliseconds in a second)


METERS: dict[str, Meter] = {
    "input_tokens": Meter("Input Tokens", "Tokens", 1),
    "output_tokens": Meter("Output Tokens", "Tokens", 1),
    "cache_read_input_tokens": Meter("Cache Read Input Tokens", "Tokens", 1),
    "cache_creation_input_tokens": Meter("Cache Creation Input Tokens", "Tokens", 1),
    "reasoning_tokens": Meter("Reasoning Tokens", "Tokens", 1),
    "images": Meter("Images", "Images", 1),
    "audio_milliseconds": Meter("Audio", "Seconds", 1000),
    "video_milliseconds": Meter("Video", "Seconds", 1000),
    "characters": Meter("Characters", "Characters", 1),
    "requests": Meter("Requests", "Requests", 1),
    "seat_months": Meter("Seats", "Seat-Months", 1),
}


@dataclass(frozen=True)
class _UnitPrice:
    contracted: Decimal  # KRW per pricing unit, as rated
    listed: Decimal  # the published version's (the contracted one if the version has none)
    quoted: Price  # the contracted price as the catalog quotes it


def usage_lines(
    charges: Sequence[UsageCharge],
    dimensions: Sequence[str],
    time_zone: str,
    catalog: PriceCatalog | None,
) -> list[query_pb.FocusLine]:
    tz = ZoneInfo(time_zone)
    out: list[query_pb.FocusLine] = []
    for charge in charges:
        values = dict(zip(dimensions, charge.keys, strict=True))
        prices = _prices(catalog, charge, values) if catalog is not None else None
        if prices is None:
            out.append(_unpriced(charge, values, tz))
            continue
        lines = []
        for field, quantity in charge.quantities.items():
            unit_price = prices[field]
            meter = METERS[field]
            pricing_quantity = Decimal(quantity) / meter.per_field
            contracted, listed = unit_price.contracted, unit_price.listed
            contracted_cost = quantize_cost(contracted * pricing_quantity)
            line = _line(values, charge.day, tz, charge.price_version)
            line.MergeFrom(
                query_pb.FocusLine(
                    contracted_cost=to_money(contracted_cost),
                    list_cost=to_money(quantize_cost(listed * pricing_quantity)),
                    contracted_unit_price=_decimal(contracted),
                    list_unit_price=_decimal(listed),
                    pricing_quantity=_decimal(pricing_quantity),
                    pricing_unit=meter.unit,
                    pricing_category=PRICING_CATEGORY,
                    sku_price_id=f"{line.sku_id}/{field}@{charge.price_version}",
                    sku_meter=meter.name,
                    sku_price_details=_details(unit_price.quoted),
                    x_event_count=charge.events_with[field],
                    x_quantities=pb.Usage(**{field: quantity}),
                )
            )
            line.charge_description += f" {meter.name}"
            if line.charge_category != "Purchase":
                line.consumed_quantity = line.pricing_quantity
                line.consumed_unit = meter.unit
            lines.append((contracted_cost, line))
        # Billed is what the ledger holds: each event's cost was rounded to the stored
        # precision, so the products may differ from it by that rounding; the largest line
        # carries the difference.
        residual = charge.cost - sum((cost for cost, _ in lines), Decimal(0))
        largest = max(range(len(lines)), key=lambda i: abs(lines[i][0]))
        for i, (cost, line) in enumerate(lines):
            billed = to_money(cost + residual if i == largest else cost)
            line.billed_cost.CopyFrom(billed)
            if line.charge_category != "Purchase":
                line.effective_cost.CopyFrom(billed)
            else:  # prepaid for the month's use: FOCUS puts a purchase's effective cost at 0
                line.effective_cost.CopyFrom(to_money(Decimal(0)))
            out.append(line)
    return out


def correction_lines(
    charges: Sequence[CorrectionCharge], dimensions: Sequence[str], time_zone: str
) -> list[query_pb.FocusLine]:
    tz = ZoneInfo(time_zone)
    out = []
    for charge in charges:
        values = dict(zip(dimensions, charge.keys, strict=True))
        line = _line(values, charge.day, tz, charge.price_version, charge.billed_month)
        money = to_money(charge.cost)
        for field in (line.billed_cost, line.effective_cost, line.list_cost, line.contracted_cost):
            field.CopyFrom(money)
        line.charge_category = "Adjustment"  # of the price, not of the use
        line.charge_frequency = "One-Time"
        line.charge_class = "Correction"
        line.sku_id = ""  # a re-rating spans the SKU prices of its events: no one SKU meter
        line.charge_description += " re-rating"
        line.x_event_count = charge.events
        out.append(line)
    return out


def _line(
    values: dict[str, str],
    day: datetime,
    tz: ZoneInfo,
    price_version: str,
    billed_month: datetime | None = None,
) -> query_pb.FocusLine:
    """The columns every line of a charge shares: who, what, when."""
    subscription = values["operation"] == SUBSCRIPTION
    model = values["model"]
    line = query_pb.FocusLine(
        billing_currency=KRW,
        charge_category="Purchase" if subscription else "Usage",
        charge_description=" ".join(
            part for part in (values["service"], model, values["operation"]) if part
        ),
        charge_frequency="Recurring" if subscription else "Usage-Based",
        provider_name=values["provider"],
        publisher_name=values["provider"],
        invoice_issuer_name=values["provider"],
        service_name=values["service"],
        service_category=SERVICE_CATEGORY,
        service_subcategory=SERVICE_SUBCATEGORY,
        sku_id="/".join(p for p in (values["provider"], values["service"], model) if p),
        # civicmeter knows organisations and departments by id only: the id is the name.
        billing_account_id=values["organization"],
        billing_account_name=values["organization"],
        sub_account_id=values["department"],
        sub_account_name=values["department"],
        tags={k: v for k, v in (("purpose", values["purpose"]),) if v},
        x_user_id=values.get("user", ""),
        x_operation=values["operation"],
        x_purpose=values["purpose"],
        x_price_version=price_version,
    )
    local_day = day.astimezone(tz)
    next_day = datetime.combine(local_day.date() + timedelta(days=1), time(), tz)
    month = _month_start(billed_month.astimezone(tz) if billed_month else local_day, tz)
    next_month = _month_start(month + timedelta(days=32), tz)
    for field, moment in (
        (line.charge_period_start, local_day),
        (line.charge_period_end, next_day),  # wall-clock days: 23- and 25-hour days too
        (line.billing_period_start, month),
        (line.billing_period_end, next_month),
    ):
        field.FromDatetime(moment.astimezone(UTC))
    line.invoice_id = f"{values['organization']}-{month:%Y-%m}"
    return line


def _unpriced(charge: UsageCharge, values: dict[str, str], tz: ZoneInfo) -> query_pb.FocusLine:
    """One line for a charge whose price version the catalog does not know: its cost, and its
    quantity when it has just one."""
    line = _line(values, charge.day, tz, charge.price_version)
    money = to_money(charge.cost)
    for field in (line.billed_cost, line.effective_cost, line.list_cost, line.contracted_cost):
        field.CopyFrom(money)
    line.x_event_count = charge.events
    line.x_quantities.CopyFrom(pb.Usage(**charge.quantities))
    if len(charge.quantities) == 1:
        [(name, quantity)] = charge.quantities.items()
        meter = METERS[name]
        line.pricing_quantity = _decimal(Decimal(quantity) / meter.per_field)
        line.pricing_unit = meter.unit
        if line.charge_category != "Purchase":
            line.consumed_quantity, line.consumed_unit = line.pricing_quantity, meter.unit
    return line


def _prices(
    catalog: PriceCatalog, charge: UsageCharge, values: dict[str, str]
) -> dict[str, _UnitPrice] | None:
    """The prices that rated the charge's quantities, looked up by its price version; None
    when the catalog does not know the version or lacks one of them."""
    version_name, _, contract_name = charge.price_version.partition(CONTRACT_MARK)
    version = next((v for v in catalog.versions if v.version == version_name), None)
    if version is None:
        return None
    contract = None
    if contract_name:
        contract = next((c for c in catalog.contracts if c.name == contract_name), None)
        if contract is None:
            return None
    key = (values["provider"], values["service"], values["model"])
    listed = _resolve(version.prices, key)
    contracted = {**listed, **(_resolve(contract.prices, key) if contract else {})}
    # FX rates are dated by Seoul date: any time of the charge's Seoul date finds its rate.
    noon = datetime.combine(charge.seoul_date, time(12), SEOUL).timestamp()
    found = {}
    for field in charge.quantities:
        if field not in contracted:
            return None
        per_field = METERS[field].per_field
        krw = [
            _krw(catalog, price, noon) for price in (contracted[field], listed.get(field))
            if price is not None
        ]  # fmt: skip
        if None in krw:
            return None
        krw_prices = [k * per_field for k in krw if k is not None]
        found[field] = _UnitPrice(krw_prices[0], krw_prices[-1], contracted[field])
    return found


def _resolve(table: PriceTable, key: tuple[str, str, str]) -> dict[str, Price]:
    """A model's prices as the catalog resolves them: the service's "*" prices, overridden by
    the model's own."""
    provider, service, _ = key
    return {**table.get((provider, service, ANY_MODEL), {}), **table.get(key, {})}


def _krw(catalog: PriceCatalog, price: Price, epoch_seconds: float) -> Decimal | None:
    """KRW per unit of the price's Usage field; None without an FX rate."""
    rate = catalog.fx.rate(price.currency, epoch_seconds)
    return None if rate is None else price.per_quantity * rate


def _details(price: Price) -> str:
    """The price as the catalog quotes it, in the vendor's currency."""
    return json.dumps(
        {"x_QuotedPrice": str(price.amount), "x_QuotedCurrency": price.currency,
         "x_QuotedPer": price.per, "x_QuotedUnit": price.unit},
        separators=(",", ":"),
    )  # fmt: skip


def _month_start(moment: datetime, tz: ZoneInfo) -> datetime:
    return datetime.combine(moment.date().replace(day=1), time(), tz)


def _decimal(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros: 0.0034, 1500, 0.000207835."""
    text = format(value.normalize(), "f")
    return text if value else "0"
