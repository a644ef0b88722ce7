"""The versioned, effective-dated price catalog and the rating of usage events.

prices.py holds the model (prices, versions, contracts), rating.py the catalog in force and the
rating of events, catalog_file.py loading and checking the file, fx.py the dated FX table and
catalog_source.py the reloading of the files while a service runs. The names below are the
package's public surface.

A catalog file lists price versions. Each takes effect at `effective_from` (until the next one)
and prices (provider, service, model, unit) in the vendor's currency; the cost of an event is
converted to KRW with the FX rate in force on its Seoul date. Money is Decimal throughout:
prices and rates are quoted decimal strings, never YAML floats.

    currency: KRW                 # default currency of prices that name none (default KRW)
    fx_file: fx.yaml              # dated FX table, relative to this file (format: pricing/fx.py);
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

from civicmeter.core.pricing.catalog_file import load_catalog, parse_catalog
from civicmeter.core.pricing.prices import (
    ANY_MODEL,
    CONTRACT_MARK,
    QUOTED_UNITS,
    CatalogError,
    Contract,
    Key,
    Price,
    PriceTable,
    PriceVersion,
    Rating,
    UnpricedError,
)
from civicmeter.core.pricing.rating import GroupRate, PriceCatalog, micro_won_text

__all__ = [
    "ANY_MODEL",
    "CONTRACT_MARK",
    "QUOTED_UNITS",
    "CatalogError",
    "Contract",
    "GroupRate",
    "Key",
    "Price",
    "PriceCatalog",
    "PriceTable",
    "PriceVersion",
    "Rating",
    "UnpricedError",
    "load_catalog",
    "micro_won_text",
    "parse_catalog",
]
