"""The versioned, effective-dated price catalog and the rating of usage events.

A catalog file lists price versions. Each takes effect at `effective_from` (until the next one)
and prices (provider, service, model, unit) in the vendor's currency; the cost of an event is
converted to KRW with the FX rate in force on its Seoul date. Money is Decimal throughout:
prices and rates are quoted decimal strings, never YAML floats.

    currency: KRW                 # default currency of prices that name none (default KRW)
    fx_file: fx.yaml              # dated FX table, relative to this file (format: core/fx.py);
                                  # or `fx: {rates: {USD: [...]}}` inline
    versions:
      - version: "2024-01"
        effective_from: "2024-01-01T00:00:00+09:00"   # or a date: 00:00 in Asia/Seoul
        prices:
          - {provider: openai, service: chatgpt, model: "*", unit: seat_months, price: "29000"}
      - version: "2025-02"
        effective_from: "2025-02-01T00:00:00+09:00"
        based_on: "2024-01"       # start from that version's prices; entries below override
        currency: USD             # default currency of this version's entries
        prices:
          - {provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens,
             price: "2.50", per: 1000000}                 # USD 2.50 per 1M tokens
          - {provider: openai, service: openai-api, model: whisper-1, unit: audio_seconds,
             price: "0.006", per: 60}                     # USD 0.006 a minute
          - {provider: openai, service: chatgpt, model: business, unit: seat_months,
             price: "33.00"}                              # a seat plan: model is the plan
          - {provider: naver, service: clova-dubbing, unit: seat_months, price: "16000",
             currency: KRW}
    contracts:                    # per-organisation prices that replace the defaults
      - contract: seoul-2025
        organization: seoul
        effective_from: "2025-03-01T00:00:00+09:00"
        effective_until: "2026-03-01T00:00:00+09:00"     # optional, exclusive
        currency: USD
        prices:
          - {provider: openai, service: openai-api, model: gpt-4o, unit: input_tokens,
             price: "2.25", per: 1000000}

Units are the fields of `Usage` (input_tokens, output_tokens, cache_read_input_tokens,
cache_creation_input_tokens, reasoning_tokens, images, audio_milliseconds, video_milliseconds,
characters, requests, seat_months), plus `audio_seconds` and `video_seconds`, which price the
millisecond fields per second (quantity / 1000, exactly). `price` buys `per` units (default 1);
price / per must be an exact decimal. Model "*" matches any model of a service; for seat
charges the model is the plan ("business", "team", ...), so "*" matches any plan.

A price is looked up, unit by unit, in the organisation's contract in force (its model, then
"*"), then in the version in force (its model, then "*"). The rating names the version, and the
contract when one of its prices was used: "2025-02" or "2025-02+contract:seoul-2025", so that
every cost can be re-derived from the stored quantities. A published version is never edited:
a new price is a new version.

A batch is rated per tariff: `group_rate` resolves the prices of one (organisation, provider,
service, model) once for a span of time in which no version, contract or FX rate changes, as
whole numbers, and `GroupRate.micro_won` costs each event of the group with integer arithmetic,
to the micro-won and rounded as `rate` rounds (tests/core/test_pricing_groups.py holds the two
equal). Whatever a group cannot cost (a quantity without a price, several currencies, sums too
large for exact integers) goes to `rate`, which gives its cost or its UnpricedError.

Loading checks everything and names the file, the line and the path of the first problem:
unknown keys, keys given twice, duplicate prices, unknown units, negative or unquoted prices,
versions out of order, unknown `based_on`, overlapping contracts of one organisation, and a
currency without an FX rate when a version or contract that uses it takes effect.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Context, Decimal, Inexact, InvalidOperation
from pathlib import Path
from typing import Any, Final

from civicmeter.api.money import COST_QUANTUM, KRW, quantize_cost
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.fx import (
    CURRENCY_CODE,
    SEOUL,
    FxError,
    FxTable,
    load_fx,
    parse_fx,
    seoul_date,
    seoul_midnight,
)
from civicmeter.core.quantities import QUANTITIES
from civicmeter.policy.yaml_source import At, SourceError, SourceFile, load_yaml

# Units a price may be quoted in: (the Usage field it applies to, field units per quoted unit).
QUOTED_UNITS: dict[str, tuple[str, int]] = {
    **{unit: (unit, 1) for unit in QUANTITIES},
    "audio_seconds": ("audio_milliseconds", 1000),
    "video_seconds": ("video_milliseconds", 1000),
}
ANY_MODEL = "*"
CONTRACT_MARK = "+contract:"

# Rating arithmetic is exact: a result that would need rounding raises Inexact instead.
_EXACT: Final = Context(prec=60, traps=[Inexact, InvalidOperation])
_ZERO: Final = Decimal(0)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_TARIFFS = 65_536  # resolved (version, contract, model) price lists kept for reuse

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


class CatalogError(SourceError):
    """The catalog (or its FX table) is malformed: the file, the line, the entry, the reason."""


class UnpricedError(LookupError):
    """The catalog has no price (or no FX rate) for a quantity the event carries."""


@dataclass(frozen=True)
class Rating:
    cost_krw: Decimal
    price_version: str


Key = tuple[str, str, str]  # (provider, service, model)


@dataclass(frozen=True)
class Price:
    amount: Decimal  # as quoted, in `currency`, for `per` of `unit`
    currency: str
    unit: str  # as quoted: input_tokens, audio_seconds, ...
    per: int
    field: str  # the Usage field it applies to
    per_quantity: Decimal  # the exact price of one unit of `field`, in `currency`
    origin: At  # where it was quoted, for messages


PriceTable = dict[Key, dict[str, Price]]  # key -> Usage field -> price


def _lookup(table: PriceTable, provider: str, service: str, model: str) -> list[dict[str, Price]]:
    """The price lists that apply to a model, the weaker ("*") first."""
    found = []
    wildcard = table.get((provider, service, ANY_MODEL))
    if wildcard is not None:
        found.append(wildcard)
    if model != ANY_MODEL:
        own = table.get((provider, service, model))
        if own is not None:
            found.append(own)
    return found


@dataclass(frozen=True)
class PriceVersion:
    version: str
    effective_from: datetime
    prices: PriceTable


@dataclass(frozen=True)
class Contract:
    """An organisation's own prices, replacing the defaults while it is in force."""

    name: str
    organization: str
    effective_from: datetime
    effective_until: datetime | None  # exclusive; None: until the organisation's next contract
    prices: PriceTable


@dataclass(frozen=True)
class _Tariff:
    """What one model costs under one version and contract, ready for fast exact rating.

    Per Usage field: the price of one unit as a whole number of `scale` (10^-n), its currency,
    and whether the contract set it. Summing whole numbers is exact and quick; the sum is
    scaled back to a Decimal once per event.
    """

    version: str
    with_contract: str
    lines: dict[str, tuple[int, str, bool]]
    scale: Decimal
    currency: str | None  # the one currency of all its non-zero prices; None: several


_UNRESOLVED: Final = _Tariff("", "", {}, Decimal(1), None)
# Micro-won are exact below this: every Decimal on the way (a 60-digit context, then a cost
# quantized in the default 28-digit one) holds the figure without rounding.
_EXACT_MICRO_BELOW: Final = 10**26
_COST_PLACES: Final = -int(COST_QUANTUM.as_tuple().exponent)  # 6: costs are micro-won
_MICRO_PER_WON: Final = 10**_COST_PLACES


@dataclass(frozen=True)
class GroupRate:
    """What one (organisation, provider, service, model) costs over a span in which neither
    the price version, the contract nor an FX rate changes: a batch's events of one tariff
    are rated with whole numbers, exactly as PriceCatalog.rate rates them one by one.

    Quantities come as a tuple in QUANTITIES order. Per field, `prices` holds the price of one
    unit in whole units of 10^-digits of the tariff's currency (None: the field has no price).
    """

    prices: tuple[int | None, ...]
    contract_fields: tuple[int, ...]  # fields whose non-zero price the contract sets
    version: str
    with_contract: str
    multiplier: int  # weighted sum x multiplier / divisor, rounded half-even = micro-won
    divisor: int
    exact_below: int  # non-zero sums from here on go to PriceCatalog.rate; 0: no FX rate
    # The weighted sum of a tuple of quantities, or -1 when one without a price is not zero:
    # arithmetic written out for this tariff's prices, several times quicker than a loop.
    weigh: Callable[[tuple[int, ...]], int] = dataclasses.field(compare=False, repr=False)

    def micro_won(self, quantities: tuple[int, ...]) -> int | None:
        """The cost in micro-won, rounded as quantize_cost rounds; None when the event must be
        rated by PriceCatalog.rate (a quantity without a price, no FX rate, too large)."""
        weighted = self.weigh(quantities)
        if weighted >= self.exact_below or weighted < 0:
            return 0 if weighted == 0 else None
        scaled = weighted * self.multiplier
        if self.divisor == 1:
            return scaled
        quotient, remainder = divmod(scaled, self.divisor)
        twice = 2 * remainder
        if twice > self.divisor or (twice == self.divisor and quotient & 1):
            quotient += 1
        return quotient

    def price_version(self, quantities: tuple[int, ...]) -> str:
        """The version a rating names: with the contract when one of its prices counted."""
        if any(quantities[i] for i in self.contract_fields):
            return self.with_contract
        return self.version


def _weigher(prices: tuple[int | None, ...]) -> Callable[[tuple[int, ...]], int]:
    """q -> the sum of q[i] x prices[i], or -1 when a q[i] without a price is not zero."""
    if any(price is not None and type(price) is not int for price in prices):
        raise TypeError("tariff prices must be whole numbers")  # what makes the source safe
    unpriced = " or ".join(f"q[{i}]" for i, price in enumerate(prices) if price is None)
    weighted = " + ".join(f"q[{i}] * {price}" for i, price in enumerate(prices) if price) or "0"
    source = f"-1 if {unpriced} else {weighted}" if unpriced else weighted
    # Only whole numbers (checked above) and indices go into the expression.
    weigh: Callable[[tuple[int, ...]], int] = eval(f"lambda q: {source}", {"__builtins__": {}})
    return weigh


def micro_won_text(micro: int) -> str:
    """A cost in micro-won as str(quantize_cost(cost)) writes it, e.g. 6.320000."""
    return f"{micro // _MICRO_PER_WON}.{micro % _MICRO_PER_WON:0{_COST_PLACES}d}"


class PriceCatalog:
    """Price versions ordered by effective time, contracts and FX; rates events in KRW."""

    def __init__(
        self,
        versions: list[PriceVersion],
        contracts: Iterable[Contract] = (),
        fx: FxTable | None = None,
        files: tuple[SourceFile, ...] = (),
    ) -> None:
        if not versions:
            raise CatalogError("<catalog>", None, "versions", "the catalog has no versions")
        self._versions = sorted(versions, key=lambda v: v.effective_from)
        self._starts = [v.effective_from.timestamp() for v in self._versions]
        self._contracts: dict[str, tuple[list[float], list[Contract]]] = {}
        for contract in sorted(contracts, key=lambda c: c.effective_from):
            starts, held = self._contracts.setdefault(contract.organization, ([], []))
            starts.append(contract.effective_from.timestamp())
            held.append(contract)
        self.fx = fx or FxTable()
        self.files = files  # the catalog file and its FX file, as read
        self._tariffs: dict[tuple[int, str], dict[Key, _Tariff | None]] = {}
        # Every instant at which a version, a contract or an FX rate changes: between two of
        # them a tariff and its conversion to KRW stay the same (see group_rate).
        changes = {*self._starts, *(s for starts, _ in self._contracts.values() for s in starts)}
        changes.update(
            c.effective_until.timestamp() for c in self.contracts if c.effective_until is not None
        )
        for currency in self.fx.currencies:
            changes.update(seoul_midnight(day) for day, _ in self.fx.rates(currency))
        self._changes = sorted(changes)
        self._groups: dict[tuple[int, str, str, str, str], GroupRate | None] = {}

    @property
    def versions(self) -> list[PriceVersion]:
        return list(self._versions)

    @property
    def contracts(self) -> list[Contract]:
        return [c for _, held in self._contracts.values() for c in held]

    def version_at(self, epoch_seconds: float) -> PriceVersion | None:
        index = bisect.bisect_right(self._starts, epoch_seconds) - 1
        return self._versions[index] if index >= 0 else None

    def contract_at(self, organization: str, epoch_seconds: float) -> Contract | None:
        held = self._contracts.get(organization)
        if held is None:
            return None
        starts, contracts = held
        index = bisect.bisect_right(starts, epoch_seconds) - 1
        if index < 0:
            return None
        contract = contracts[index]
        until = contract.effective_until
        if until is not None and epoch_seconds >= until.timestamp():
            return None
        return contract

    def rate(self, event: pb.UsageEvent) -> Rating:
        # Versions start on whole seconds, so the event's whole seconds choose the version.
        seconds = event.event_time.seconds
        tariff = self._tariff(
            event.organization_id,
            event.provider_name,
            event.service_id,
            event.request_model,
            seconds,
        )
        if tariff is None:
            version = self.version_at(seconds)
            if version is None:
                raise UnpricedError(
                    f"no price version is in force at the event time for {_what(event)}"
                )
            raise UnpricedError(f"price version {version.version} has no prices for {_what(event)}")
        lines = tariff.lines
        total = 0
        by_contract = False
        # ListFields yields only the quantities that are set (non-zero in proto3).
        for descriptor, quantity in event.usage.ListFields():
            line = lines.get(descriptor.name)
            if line is None:
                raise UnpricedError(
                    f"price version {tariff.version} has no {descriptor.name} price "
                    f"for {_what(event)}"
                )
            coefficient, _, from_contract = line
            if coefficient:
                total += coefficient * quantity
                by_contract = by_contract or from_contract
        try:
            if tariff.currency is None:
                cost = self._mixed_cost(tariff, event, seconds)
            else:
                cost = _EXACT.multiply(total, tariff.scale)
                if total and tariff.currency != KRW:
                    cost = _EXACT.multiply(cost, self._fx_rate(tariff.currency, seconds, event))
        except Inexact:
            raise UnpricedError(
                f"the cost of {_what(event)} is too large to compute exactly"
            ) from None
        return Rating(quantize_cost(cost), tariff.with_contract if by_contract else tariff.version)

    def span_of(self, epoch_seconds: float) -> int:
        """The span of time an instant falls in; group rates are fixed within a span."""
        return bisect.bisect_right(self._changes, epoch_seconds)

    def group_rate(
        self,
        span: int,
        organization: str,
        provider: str,
        service: str,
        model: str,
        seconds: int,
    ) -> GroupRate | None:
        """The rate of one tariff over `span` (which `seconds` falls in), resolved once and
        kept; None: rate each event with PriceCatalog.rate (no price, several currencies)."""
        if organization not in self._contracts:
            organization = ""  # without contracts, organisations share the version's prices
        key = (span, organization, provider, service, model)
        try:
            return self._groups[key]
        except KeyError:
            pass
        group = self._group_rate(organization, provider, service, model, seconds)
        if len(self._groups) >= _MAX_TARIFFS:
            self._groups.clear()
        self._groups[key] = group
        return group

    def _group_rate(
        self,
        organization: str,
        provider: str,
        service: str,
        model: str,
        seconds: int,
    ) -> GroupRate | None:
        tariff = self._tariff(organization, provider, service, model, seconds)
        if tariff is None or tariff.currency is None:
            return None
        lines = [tariff.lines.get(name) for name in QUANTITIES]
        prices = tuple(line[0] if line else None for line in lines)
        # cost = weighted x 10^-digits x rate; the rate is a whole number R x 10^-r.
        digits = -int(tariff.scale.as_tuple().exponent)
        rate = self.fx.rate(tariff.currency, seconds)
        multiplier, divisor, exact_below = 1, 1, 0
        if rate is not None:
            sign, rate_digits, exponent = rate.as_tuple()
            assert isinstance(exponent, int) and not sign  # FX rates are finite and positive
            whole = int("".join(map(str, rate_digits)))
            # As a power of ten: the cost in micro-won = weighted x R x 10^-shift.
            shift = digits - exponent - _COST_PLACES
            if shift > 0:
                multiplier, divisor = whole, 10**shift
            else:
                multiplier = whole * 10**-shift
            exact_below = _EXACT_MICRO_BELOW * divisor // multiplier
        return GroupRate(
            prices=prices,
            contract_fields=tuple(
                i for i, line in enumerate(lines) if line and line[0] and line[2]
            ),
            version=tariff.version,
            with_contract=tariff.with_contract,
            multiplier=multiplier,
            divisor=divisor,
            exact_below=exact_below,
            weigh=_weigher(prices),
        )

    def seat_fee(
        self, provider: str, service: str, plan: str, organization_id: str, at: datetime
    ) -> tuple[Decimal, str]:
        """The KRW fee of one seat-month of a plan, and the price version that sets it."""
        if at.tzinfo is None:
            raise ValueError("the time of a seat fee must carry a UTC offset")
        event = pb.UsageEvent(
            organization_id=organization_id,
            provider_name=provider,
            service_id=service,
            request_model=plan,
            usage=pb.Usage(seat_months=1),
        )
        event.event_time.FromDatetime(at)
        rating = self.rate(event)
        return rating.cost_krw, rating.price_version

    def unit_price(
        self,
        provider: str,
        service: str,
        model: str,
        field: str,
        epoch_seconds: float,
        organization_id: str = "",
    ) -> Decimal | None:
        """The exact KRW price of one unit of a Usage field at a time; None if it has none."""
        tariff = self._tariff(organization_id, provider, service, model, int(epoch_seconds // 1))
        line = tariff.lines.get(field) if tariff is not None else None
        if tariff is None or line is None:
            return None
        coefficient, currency, _ = line
        if not coefficient:
            return _ZERO
        rate = self.fx.rate(currency, epoch_seconds)
        if rate is None:
            raise UnpricedError(_no_rate(currency, epoch_seconds, f"{provider}/{service}/{model}"))
        return _EXACT.multiply(_EXACT.multiply(coefficient, tariff.scale), rate)

    def describe(self) -> str:
        versions = self._versions
        currencies = sorted(
            {p.currency for v in versions for units in v.prices.values() for p in units.values()}
            | {p.currency for c in self.contracts for u in c.prices.values() for p in u.values()}
        )
        text = (
            f"{len(versions)} version(s) {versions[0].version} .. {versions[-1].version}, "
            f"{len(self.contracts)} contract(s), currencies {', '.join(currencies)}"
        )
        return text + (f", FX from {self.fx.source}" if self.fx.source else "")

    def _tariff(
        self, organization: str, provider: str, service: str, model: str, seconds: int
    ) -> _Tariff | None:
        index = bisect.bisect_right(self._starts, seconds) - 1
        if index < 0:
            return None
        contract = None
        if organization in self._contracts:
            contract = self.contract_at(organization, seconds)
        # One cache per version and contract, keyed by the model: resolving is done once.
        cache = self._tariffs.get((index, contract.name if contract else ""))
        if cache is None:
            cache = self._tariffs[(index, contract.name if contract else "")] = {}
        key = (provider, service, model)
        tariff = cache.get(key, _UNRESOLVED)
        if tariff is _UNRESOLVED:
            tariff = self._resolve(self._versions[index], contract, provider, service, model)
            if len(cache) >= _MAX_TARIFFS:
                cache.clear()  # arbitrary model names must not grow the cache without bound
            cache[key] = tariff
        return tariff

    @staticmethod
    def _resolve(
        version: PriceVersion, contract: Contract | None, provider: str, service: str, model: str
    ) -> _Tariff | None:
        prices: dict[str, tuple[Price, bool]] = {}
        found = False
        for table, from_contract in ((version.prices, False), (contract and contract.prices, True)):
            for units in _lookup(table or {}, provider, service, model):
                found = True
                prices.update((field, (price, from_contract)) for field, price in units.items())
        if not found:
            return None
        named = f"{version.version}{CONTRACT_MARK}{contract.name}" if contract else version.version
        digits = max(-min(0, int(p.per_quantity.as_tuple().exponent)) for p, _ in prices.values())
        lines = {
            field: (int(price.per_quantity.scaleb(digits, _EXACT)), price.currency, from_contract)
            for field, (price, from_contract) in prices.items()
        }
        currencies = {currency for coefficient, currency, _ in lines.values() if coefficient}
        one = currencies.pop() if len(currencies) == 1 else KRW if not currencies else None
        return _Tariff(version.version, named, lines, Decimal(1).scaleb(-digits), one)

    def _mixed_cost(self, tariff: _Tariff, event: pb.UsageEvent, seconds: int) -> Decimal:
        """The cost of an event priced in several currencies: each subtotal is converted."""
        subtotals: dict[str, int] = {}
        for descriptor, quantity in event.usage.ListFields():
            coefficient, currency, _ = tariff.lines[descriptor.name]
            subtotals[currency] = subtotals.get(currency, 0) + coefficient * quantity
        cost = _ZERO
        for currency, subtotal in subtotals.items():
            if subtotal:
                rate = self._fx_rate(currency, seconds, event)
                cost = _EXACT.fma(_EXACT.multiply(subtotal, tariff.scale), rate, cost)
        return cost

    def _fx_rate(self, currency: str, seconds: int, event: pb.UsageEvent) -> Decimal:
        rate = self.fx.rate(currency, seconds)
        if rate is None:
            raise UnpricedError(_no_rate(currency, seconds, _what(event)))
        return rate


def _what(event: pb.UsageEvent) -> str:
    return f"{event.provider_name}/{event.service_id}/{event.request_model or ANY_MODEL}"


def _no_rate(currency: str, epoch_seconds: float, what: str) -> str:
    return f"no {currency} to KRW rate is in force on {seoul_date(epoch_seconds)} for {what}"


# --- loading ---------------------------------------------------------------------------------


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
        per_quantity = _EXACT.divide(amount, per * scale)
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
