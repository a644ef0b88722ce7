"""Loading the catalog file (and its FX table) into a PriceCatalog, checking everything:
an error names the file, the line, the entry and the reason (the format: core/pricing/__init__.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Inexact
from pathlib import Path
from typing import Any

from civicmeter.api.money import KRW
from civicmeter.core.pricing.fx import (
    CURRENCY_CODE,
    SEOUL,
    FxError,
    FxTable,
    load_fx,
    parse_fx,
    seoul_date,
)
from civicmeter.core.pricing.prices import (
    ANY_MODEL,
    EXACT,
    QUOTED_UNITS,
    CatalogError,
    Contract,
    Key,
    Price,
    PriceTable,
    PriceVersion,
)
from civicmeter.core.pricing.rating import PriceCatalog
from civicmeter.policy.yaml_source import At, SourceError, SourceFile, load_yaml

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_TOP_KEYS = ("currency", "fx_file", "fx", "versions", "contracts")
_VERSION_KEYS = ("version", "effective_from", "based_on", "currency", "prices")
_CONTRACT_KEYS = (
    "contract",
    "organization",
    "effective_from",
    "effective_until",
    "currency",
    "prices",
)
_PRICE_KEYS = ("provider", "service", "model", "unit", "price", "per", "currency")


def load_catalog(path: Path) -> PriceCatalog:
    """Load and check a catalog file and its FX file; errors name the file, line and entry."""
    files: list[SourceFile] = []
    try:
        document, file = load_yaml(path, CatalogError)
        files.append(file)
        return _parse(document, str(path), path.parent, files)
    except SourceError as exc:
        error = (
            exc
            if isinstance(exc, CatalogError)
            else CatalogError(exc.source, exc.line, exc.path, exc.reason)
        )
        error.files = tuple(dict.fromkeys((*files, *exc.files)))
        raise error from None


def parse_catalog(
    document: Any, source: str = "<catalog>", base: Path | None = None
) -> PriceCatalog:
    """A catalog from a parsed document; `fx_file` is relative to `base` (default: source's)."""
    try:
        return _parse(document, source, base or Path(source).parent, [])
    except FxError as exc:
        raise CatalogError(exc.source, exc.line, exc.path, exc.reason) from None


def _parse(document: Any, source: str, base: Path, files: list[SourceFile]) -> PriceCatalog:
    root = At(source, CatalogError)
    doc = root.mapping(document, _TOP_KEYS)
    currency = KRW
    if "currency" in doc:
        currency = _currency(doc["currency"], root.key(doc, "currency"))
    fx = _fx_table(doc, root, base, files)
    versions = _versions(doc, root, currency)
    contracts = _contracts(doc, root, currency)
    for version in versions:
        _check_rates(version.prices, version.effective_from, f"version {version.version}", fx)
    for contract in contracts:
        _check_rates(contract.prices, contract.effective_from, f"contract {contract.name}", fx)
    return PriceCatalog(versions, contracts, fx, tuple(files))


def _fx_table(doc: dict[Any, Any], root: At, base: Path, files: list[SourceFile]) -> FxTable:
    if "fx_file" in doc and "fx" in doc:
        root.key(doc, "fx").fail("give the FX table either inline (fx) or as a file (fx_file)")
    if "fx" in doc:
        return parse_fx(doc["fx"], root.source, root.key(doc, "fx"))
    if "fx_file" not in doc:
        return FxTable()
    name = doc["fx_file"]
    at = root.key(doc, "fx_file")
    if not isinstance(name, str) or not name:
        at.fail("must be the path of the FX file, relative to the catalog")
    path = base / name
    if not path.is_file():
        files.append(SourceFile.of(path))  # watched, so that creating it triggers a reload
        at.fail(f"the FX file {path} does not exist")
    table = load_fx(path)
    files.extend(table.files)
    return table


def _versions(doc: dict[Any, Any], root: At, default_currency: str) -> list[PriceVersion]:
    raw_versions = doc.get("versions")
    at_versions = root.key(doc, "versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        at_versions.fail("must be a non-empty list of price versions")
    versions: list[PriceVersion] = []
    by_name: dict[str, PriceVersion] = {}
    for vi, raw in enumerate(raw_versions):
        at = at_versions.item(raw_versions, vi)
        entry = at.mapping(raw, _VERSION_KEYS)
        name = _unique_name(entry, "version", at, by_name)
        at_from = at.key(entry, "effective_from")
        effective = _time(entry.get("effective_from"), at_from)
        if versions and effective <= versions[-1].effective_from:
            at_from.fail(
                f"must be later than that of {versions[-1].version} "
                f"({versions[-1].effective_from.isoformat()}): list versions oldest first"
            )
        prices: PriceTable = {}
        if "based_on" in entry:
            base = by_name.get(entry["based_on"]) if isinstance(entry["based_on"], str) else None
            if base is None:
                at.key(entry, "based_on").fail(f"{entry['based_on']!r} is not an earlier version")
            prices = {key: dict(units) for key, units in base.prices.items()}
        version = PriceVersion(
            name, effective, _with_own_prices(prices, entry, at, default_currency)
        )
        by_name[name] = version
        versions.append(version)
    return versions


def _contracts(doc: dict[Any, Any], root: At, default_currency: str) -> list[Contract]:
    if "contracts" not in doc:
        return []
    raw_contracts = doc["contracts"]
    at_contracts = root.key(doc, "contracts")
    if not isinstance(raw_contracts, list):
        at_contracts.fail("must be a list of contracts")
    contracts: list[tuple[Contract, At]] = []  # with the place of its effective_from
    for ci, raw in enumerate(raw_contracts):
        at = at_contracts.item(raw_contracts, ci)
        entry = at.mapping(raw, _CONTRACT_KEYS)
        name = _unique_name(entry, "contract", at, {c.name for c, _ in contracts})
        organization = entry.get("organization")
        if not isinstance(organization, str) or not organization:
            at.key(entry, "organization").fail("must be an organisation id, e.g. seoul")
        at_from = at.key(entry, "effective_from")
        start = _time(entry.get("effective_from"), at_from)
        until = None
        if "effective_until" in entry:
            at_until = at.key(entry, "effective_until")
            until = _time(entry["effective_until"], at_until)
            if until <= start:
                at_until.fail("must be later than effective_from")
        prices = _with_own_prices({}, entry, at, default_currency)
        contracts.append((Contract(name, organization, start, until, prices), at_from))
    by_start = sorted(contracts, key=lambda c: (c[0].organization, c[0].effective_from))
    for (earlier, _), (later, at_from) in itertools.pairwise(by_start):
        if earlier.organization != later.organization:
            continue
        ends = earlier.effective_until
        if later.effective_from == earlier.effective_from or (
            ends is not None and ends > later.effective_from
        ):
            at_from.fail(
                f"contract {later.name} overlaps contract {earlier.name} of "
                f"{later.organization}: an organisation has one contract at a time"
            )
    return [c for c, _ in contracts]


def _unique_name(entry: dict[Any, Any], key: str, at: At, taken: Iterable[str]) -> str:
    name = entry.get(key)
    if not isinstance(name, str) or not name:
        at.key(entry, key).fail("must be a non-empty string")
    if name in taken:
        at.key(entry, key).fail(f"{name!r} appears twice")
    return name


def _with_own_prices(
    prices: PriceTable, entry: dict[Any, Any], at: At, default_currency: str
) -> PriceTable:
    """`prices` with the entry's own list laid over them, in the entry's currency."""
    currency = default_currency
    if "currency" in entry:
        currency = _currency(entry["currency"], at.key(entry, "currency"))
    for key, field, price in _price_list(entry, at, currency):
        prices.setdefault(key, {})[field] = price
    return prices


def _price_list(entry: dict[Any, Any], at: At, currency: str) -> list[tuple[Key, str, Price]]:
    raw_prices = entry.get("prices")
    at_prices = at.key(entry, "prices")
    if not isinstance(raw_prices, list) or not raw_prices:
        at_prices.fail("must be a non-empty list of prices")
    parsed: list[tuple[Key, str, Price]] = []
    seen: dict[tuple[Key, str], At] = {}
    for pi, raw in enumerate(raw_prices):
        at_price = at_prices.item(raw_prices, pi)
        key, price = _price(raw, at_price, currency)
        first = seen.get((key, price.field))
        if first is not None:
            on_line = f" on line {first.line}" if first.line is not None else ""
            at_price.fail(
                f"{'/'.join(key)} {price.field} is priced twice: already at {first.path}{on_line}"
            )
        seen[(key, price.field)] = at_price
        parsed.append((key, price.field, price))
    return parsed


def _price(raw: Any, at: At, default_currency: str) -> tuple[Key, Price]:
    entry = at.mapping(raw, _PRICE_KEYS)
    names: list[str] = []
    for name in ("provider", "service", "model", "unit"):
        value = entry.get(name, ANY_MODEL if name == "model" else None)
        if not isinstance(value, str) or not value:
            at.key(entry, name).fail("must be a non-empty string")
        names.append(value)
    provider, service, model, unit = names
    if unit not in QUOTED_UNITS:
        at.key(entry, "unit").fail(f"{unit!r} is not one of {', '.join(QUOTED_UNITS)}")
    at_amount = at.key(entry, "price")
    amount = at_amount.decimal(entry.get("price"), "0.0035")
    if amount < 0:
        at_amount.fail("must be a non-negative finite number")
    per = entry.get("per", 1)
    if isinstance(per, bool) or not isinstance(per, int) or per < 1:
        at.key(entry, "per").fail("must be a whole number of units, e.g. 1000000")
    currency = default_currency
    if "currency" in entry:
        currency = _currency(entry["currency"], at.key(entry, "currency"))
    field, scale = QUOTED_UNITS[unit]
    try:
        per_quantity = EXACT.divide(amount, per * scale)
    except Inexact:
        at_amount.fail(
            f"{amount} per {per} {unit} is not an exact decimal price of one {field}: "
            "quote it per a power of ten"
        )
    return (provider, service, model), Price(
        amount, currency, unit, per, field, per_quantity, at_amount
    )


def _currency(value: Any, at: At) -> str:
    if not isinstance(value, str) or not CURRENCY_CODE.fullmatch(value):
        at.fail(f"{value!r} is not a three-letter currency code such as KRW or USD")
    return value


def _time(value: Any, at: At) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime.combine(value, time(), SEOUL)
    elif isinstance(value, str):
        if _DATE_ONLY.fullmatch(value):
            return _time(date.fromisoformat(value), at)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            at.fail(f"{value!r} is not an ISO 8601 time")
    else:
        at.fail("must be an ISO 8601 time with a UTC offset, or a date")
    if parsed.tzinfo is None:
        at.fail("must carry a UTC offset, e.g. 2025-01-01T00:00:00+09:00")
    return parsed


def _check_rates(table: PriceTable, start: datetime, what: str, fx: FxTable) -> None:
    """Every currency a price list uses has a rate on the day it takes effect."""
    day = seoul_date(start.timestamp())
    for units in table.values():
        for price in units.values():
            if price.currency == KRW or not price.amount:
                continue
            if fx.rate(price.currency, start.timestamp()) is not None:
                continue
            first = fx.first_date(price.currency)
            if not fx.source:
                reason = f"prices in {price.currency} need an FX table: add fx_file (or fx)"
            else:
                reason = (
                    f"no {price.currency} rate in {fx.source} on {day}, when {what} takes effect"
                    + (f" (the first is on {first})" if first else "")
                )
            origin = price.origin
            raise CatalogError(origin.source, origin.line, origin.path, reason)
