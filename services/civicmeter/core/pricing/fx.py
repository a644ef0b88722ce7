"""The dated FX table: how many won one unit of a currency is worth, from a Seoul date on.

    # config/fx.yaml
    rates:
      USD:
        - {effective_from: 2025-02-01, krw_per_unit: "1445.00"}
        - {effective_from: 2025-05-01, krw_per_unit: "1390.00"}

A rate is in force from its date (00:00 in Asia/Seoul) until the next one's. Rates are quoted
decimal strings, dates strictly increase, KRW is 1 by definition and is not listed. Before a
currency's first date there is no rate: what is priced in it then cannot be converted.
"""

from __future__ import annotations

import bisect
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from civicmeter.api.money import KRW
from civicmeter.policy.yaml_source import At, SourceError, SourceFile, load_yaml

SEOUL = timezone(timedelta(hours=9), "Asia/Seoul")  # no daylight saving time since 1988
CURRENCY_CODE = re.compile(r"[A-Z]{3}")


class FxError(SourceError):
    """The FX table is malformed: the file, the line, the entry and the reason."""


def seoul_date(epoch_seconds: float) -> date:
    return datetime.fromtimestamp(epoch_seconds, SEOUL).date()


def seoul_midnight(day: date) -> float:
    return datetime.combine(day, time(), SEOUL).timestamp()


class FxTable:
    """KRW per unit of each currency, dated; KRW itself is always 1."""

    def __init__(
        self,
        rates: dict[str, list[tuple[date, Decimal]]] | None = None,
        files: tuple[SourceFile, ...] = (),
        source: str = "",
    ) -> None:
        self.files = files
        self.source = source  # where the rates come from, for messages
        self._rates = {currency: list(dated) for currency, dated in (rates or {}).items()}
        self._starts = {
            currency: [seoul_midnight(day) for day, _ in dated]
            for currency, dated in self._rates.items()
        }

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(sorted(self._rates))

    def rates(self, currency: str) -> list[tuple[date, Decimal]]:
        return list(self._rates.get(currency, ()))

    def rate(self, currency: str, epoch_seconds: float) -> Decimal | None:
        """KRW per unit of `currency` on the Seoul date of the instant; None: no rate yet."""
        if currency == KRW:
            return Decimal(1)
        starts = self._starts.get(currency)
        if not starts:
            return None
        index = bisect.bisect_right(starts, epoch_seconds) - 1
        return self._rates[currency][index][1] if index >= 0 else None

    def first_date(self, currency: str) -> date | None:
        dated = self._rates.get(currency)
        return dated[0][0] if dated else None


def load_fx(path: Path) -> FxTable:
    """Load and check an FX file; every error names the file, the line and the reason."""
    document, file = load_yaml(path, FxError)
    try:
        table = parse_fx(document, str(path))
    except FxError as exc:
        exc.files = (file,)
        raise
    table.files = (file,)
    return table


def parse_fx(document: Any, source: str = "<fx>", at: At | None = None) -> FxTable:
    """An FX table from a parsed document ({rates: {USD: [...]}}), at `at` within its file."""
    root = at or At(source, FxError)
    body = root.mapping(document, ("rates",))
    where = root.key(body, "rates")
    raw_rates = body.get("rates")
    if not isinstance(raw_rates, dict) or not raw_rates:
        where.fail("must map currency codes to lists of dated rates")
    rates: dict[str, list[tuple[date, Decimal]]] = {}
    for currency, raw_list in raw_rates.items():
        at_currency = where.label(raw_rates, str(currency))
        if not isinstance(currency, str) or not CURRENCY_CODE.fullmatch(currency):
            at_currency.fail("must be a three-letter currency code such as USD")
        if currency == KRW:
            at_currency.fail("KRW is the base currency: its rate is 1 and is not listed")
        if not isinstance(raw_list, list) or not raw_list:
            at_currency.fail("must be a non-empty list of {effective_from, krw_per_unit}")
        dated: list[tuple[date, Decimal]] = []
        for index, raw in enumerate(raw_list):
            at_entry = at_currency.item(raw_list, index)
            entry = at_entry.mapping(raw, ("effective_from", "krw_per_unit"))
            day = _date(entry.get("effective_from"), at_entry.key(entry, "effective_from"))
            if dated and day <= dated[-1][0]:
                at_entry.key(entry, "effective_from").fail(
                    f"{day} must be later than the entry before ({dated[-1][0]}): "
                    "list rates oldest first, one per date"
                )
            rate = _rate(entry.get("krw_per_unit"), at_entry.key(entry, "krw_per_unit"))
            dated.append((day, rate))
        rates[currency] = dated
    # Inline in a catalog, the table is named by its path there (fx).
    return FxTable(rates, source=source if at is None else at.path)


def _date(value: Any, at: At) -> date:
    if isinstance(value, datetime):
        at.fail("must be a date (YYYY-MM-DD, a Seoul calendar day), not a time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            at.fail(f"{value!r} is not a date (YYYY-MM-DD)")
    at.fail("must be a date (YYYY-MM-DD)")


def _rate(value: Any, at: At) -> Decimal:
    rate = at.decimal(value, "1391.25")
    if rate <= 0:
        at.fail("must be a positive number of won")
    return rate
