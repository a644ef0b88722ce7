"""The versioned, effective-dated price catalog and the rating of usage events.

A catalog file lists price versions; each version takes effect at `effective_from` and
prices (provider, service, model, unit) in KRW. Model "*" matches any model of a service.
Units are the field names of `Usage` (input_tokens, seat_months, ...). Money is Decimal.

    currency: KRW
    versions:
      - version: "2024-01"
        effective_from: "2024-01-01T00:00:00+09:00"
        prices:
          - {provider: openai, service: chatgpt, model: "*", unit: seat_months, price: "29000"}
      - version: "2024-10"
        effective_from: "2024-10-01T00:00:00+09:00"
        based_on: "2024-01"      # start from that version's prices; entries below override
        prices: [...]
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from civicmeter.core.money import KRW, quantize_cost
from civicmeter.usage.v1 import usage_event_pb2 as pb

UNITS: tuple[str, ...] = tuple(f.name for f in pb.Usage.DESCRIPTOR.fields)
ANY_MODEL = "*"


class CatalogError(ValueError):
    """The catalog file is malformed; the message names the file and the entry."""


class UnpricedError(LookupError):
    """The catalog has no price for a quantity the event carries."""


@dataclass(frozen=True)
class Rating:
    cost_krw: Decimal
    price_version: str


@dataclass(frozen=True)
class PriceVersion:
    version: str
    effective_from: datetime
    # (provider, service, model) -> {unit: price per unit in KRW}
    prices: dict[tuple[str, str, str], dict[str, Decimal]]

    def unit_prices(self, provider: str, service: str, model: str) -> dict[str, Decimal] | None:
        found = self.prices.get((provider, service, model))
        if found is None:
            found = self.prices.get((provider, service, ANY_MODEL))
        return found


class PriceCatalog:
    """Price versions ordered by effective time; rates events against the one in force."""

    def __init__(self, versions: list[PriceVersion]) -> None:
        if not versions:
            raise CatalogError("the catalog has no versions")
        self._versions = sorted(versions, key=lambda v: v.effective_from)
        self._starts = [v.effective_from.timestamp() for v in self._versions]

    @property
    def versions(self) -> list[PriceVersion]:
        return list(self._versions)

    def version_at(self, epoch_seconds: float) -> PriceVersion | None:
        index = bisect.bisect_right(self._starts, epoch_seconds) - 1
        return self._versions[index] if index >= 0 else None

    def rate(self, event: pb.UsageEvent) -> Rating:
        # Versions start on whole seconds, so the event's whole seconds choose the version.
        version = self.version_at(event.event_time.seconds)
        if version is None:
            raise UnpricedError(
                f"no price version is in force at the event time for {_what(event)}"
            )
        prices = version.unit_prices(event.provider_name, event.service_id, event.request_model)
        if prices is None:
            raise UnpricedError(f"price version {version.version} has no prices for {_what(event)}")
        cost = Decimal(0)
        # ListFields yields only the quantities that are set (non-zero in proto3).
        for descriptor, quantity in event.usage.ListFields():
            price = prices.get(descriptor.name)
            if price is None:
                raise UnpricedError(
                    f"price version {version.version} has no {descriptor.name} price "
                    f"for {_what(event)}"
                )
            if price:
                cost += price * quantity
        return Rating(quantize_cost(cost), version.version)


def _what(event: pb.UsageEvent) -> str:
    return f"{event.provider_name}/{event.service_id}/{event.request_model or ANY_MODEL}"


def load_catalog(path: Path) -> PriceCatalog:
    """Load and validate a catalog file; every error names the file and the entry."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read catalog: {exc}") from None
    return parse_catalog(document, str(path))


def parse_catalog(document: Any, source: str = "<catalog>") -> PriceCatalog:
    if not isinstance(document, dict):
        raise CatalogError(f"{source}: the catalog must be a mapping")
    currency = document.get("currency")
    if currency != KRW:
        raise CatalogError(f"{source}: currency must be {KRW}, got {currency!r}")
    raw_versions = document.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise CatalogError(f"{source}: versions must be a non-empty list")
    versions: list[PriceVersion] = []
    by_name: dict[str, PriceVersion] = {}
    for vi, raw in enumerate(raw_versions):
        where = f"{source}: versions[{vi}]"
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: must be a mapping")
        name = raw.get("version")
        if not isinstance(name, str) or not name:
            raise CatalogError(f"{where}.version: must be a non-empty string")
        if name in by_name:
            raise CatalogError(f"{where}.version: {name!r} appears twice")
        unknown = set(raw) - {"version", "effective_from", "based_on", "prices"}
        if unknown:
            raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
        effective = _parse_time(raw.get("effective_from"), f"{where}.effective_from")
        prices: dict[tuple[str, str, str], dict[str, Decimal]] = {}
        base_name = raw.get("based_on")
        if base_name is not None:
            base = by_name.get(base_name)
            if base is None:
                raise CatalogError(f"{where}.based_on: {base_name!r} is not an earlier version")
            prices = {key: dict(units) for key, units in base.prices.items()}
        entries = raw.get("prices")
        if not isinstance(entries, list) or not entries:
            raise CatalogError(f"{where}.prices: must be a non-empty list")
        own: set[tuple[tuple[str, str, str], str]] = set()
        for pi, entry in enumerate(entries):
            at = f"{where}.prices[{pi}]"
            key, unit, price = _parse_price(entry, at)
            if (key, unit) in own:
                raise CatalogError(f"{at}: duplicate price for {'/'.join(key)} {unit}")
            own.add((key, unit))
            prices.setdefault(key, {})[unit] = price
        version = PriceVersion(name, effective, _with_wildcards(prices))
        by_name[name] = version
        versions.append(version)
    return PriceCatalog(versions)


def _with_wildcards(
    prices: dict[tuple[str, str, str], dict[str, Decimal]],
) -> dict[tuple[str, str, str], dict[str, Decimal]]:
    """A model's own prices, completed unit by unit from its service's model "*" prices."""
    merged = {key: dict(units) for key, units in prices.items()}
    for (provider, service, model), units in merged.items():
        wildcard = prices.get((provider, service, ANY_MODEL))
        if model != ANY_MODEL and wildcard:
            for unit, price in wildcard.items():
                units.setdefault(unit, price)
    return merged


def _parse_time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CatalogError(f"{where}: {value!r} is not an ISO 8601 time") from None
    else:
        raise CatalogError(f"{where}: must be an ISO 8601 time with a UTC offset")
    if parsed.tzinfo is None:
        raise CatalogError(f"{where}: must carry a UTC offset")
    return parsed


def _parse_price(entry: Any, where: str) -> tuple[tuple[str, str, str], str, Decimal]:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be a mapping")
    unknown = set(entry) - {"provider", "service", "model", "unit", "price"}
    if unknown:
        raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
    fields: list[str] = []
    for name in ("provider", "service", "model", "unit"):
        value = entry.get(name, ANY_MODEL if name == "model" else None)
        if not isinstance(value, str) or not value:
            raise CatalogError(f"{where}.{name}: must be a non-empty string")
        fields.append(value)
    provider, service, model, unit = fields
    if unit not in UNITS:
        raise CatalogError(f"{where}.unit: {unit!r} is not one of {', '.join(UNITS)}")
    raw_price = entry.get("price")
    if not isinstance(raw_price, str):
        # A YAML float would already have lost precision: prices are quoted decimal strings.
        raise CatalogError(f'{where}.price: must be a quoted decimal string, e.g. "0.0035"')
    try:
        price = Decimal(raw_price)
    except InvalidOperation:
        raise CatalogError(f"{where}.price: {raw_price!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise CatalogError(f"{where}.price: must be a non-negative finite number")
    return (provider, service, model), unit, price
