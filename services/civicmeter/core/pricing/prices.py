"""The price catalog's model: prices by (provider, service, model) and Usage field, the
versions and contracts that hold them, the rating an event gets, and the errors of pricing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Final

from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.policy.yaml_source import At, SourceError

# Units a price may be quoted in: (the Usage field it applies to, field units per quoted unit).
QUOTED_UNITS: dict[str, tuple[str, int]] = {
    **{unit: (unit, 1) for unit in QUANTITIES},
    "audio_seconds": ("audio_milliseconds", 1000),
    "video_seconds": ("video_milliseconds", 1000),
}
ANY_MODEL = "*"
CONTRACT_MARK = "+contract:"

# Rating arithmetic is exact: a result that would need rounding raises Inexact instead.
EXACT: Final = Context(prec=60, traps=[Inexact, InvalidOperation])


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


def lookup(table: PriceTable, provider: str, service: str, model: str) -> list[dict[str, Price]]:
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
