"""Rating: the cost of usage events in KRW under the catalog in force, one by one (`rate`)
or a batch's group of one tariff at a time with whole numbers (`group_rate`, GroupRate).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, Inexact
from typing import Final

from civicmeter.api.money import COST_QUANTUM, KRW, quantize_cost
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.pricing.fx import (
    FxTable,
    seoul_date,
    seoul_midnight,
)
from civicmeter.core.pricing.prices import (
    ANY_MODEL,
    CONTRACT_MARK,
    EXACT,
    CatalogError,
    Contract,
    Key,
    Price,
    PriceVersion,
    Rating,
    UnpricedError,
    lookup,
)
from civicmeter.policy.yaml_source import SourceFile

_ZERO: Final = Decimal(0)
_MAX_TARIFFS = 65_536  # resolved (version, contract, model) price lists kept for reuse


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
EXACT_MICRO_BELOW: Final = 10**26
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
                cost = EXACT.multiply(total, tariff.scale)
                if total and tariff.currency != KRW:
                    cost = EXACT.multiply(cost, self._fx_rate(tariff.currency, seconds, event))
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
            exact_below = EXACT_MICRO_BELOW * divisor // multiplier
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
        return EXACT.multiply(EXACT.multiply(coefficient, tariff.scale), rate)

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
            for units in lookup(table or {}, provider, service, model):
                found = True
                prices.update((field, (price, from_contract)) for field, price in units.items())
        if not found:
            return None
        named = f"{version.version}{CONTRACT_MARK}{contract.name}" if contract else version.version
        digits = max(-min(0, int(p.per_quantity.as_tuple().exponent)) for p, _ in prices.values())
        lines = {
            field: (int(price.per_quantity.scaleb(digits, EXACT)), price.currency, from_contract)
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
                cost = EXACT.fma(EXACT.multiply(subtotal, tariff.scale), rate, cost)
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
