import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.api.money import quantize_cost
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import (
    CatalogError,
    PriceCatalog,
    UnpricedError,
    load_catalog,
    parse_catalog,
)
from civicmeter.core.pricing.fx import FxTable
from tests.factories import CATALOG_DOC, NOW, PRICES_YAML, catalog, event

REPO = Path(__file__).resolve().parents[2]
USD_JAN = Decimal("1391.25")  # PRICES_YAML's USD rates
USD_FEB = Decimal("1450.00")


def kst(text: str) -> datetime:
    return datetime.fromisoformat(f"{text}+09:00")


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML, encoding="utf-8")
    return path


@pytest.fixture
def usd(prices_file: Path) -> PriceCatalog:
    return load_catalog(prices_file)


def call(when: str, organization: str = "busan", **usage: int) -> pb.UsageEvent:
    return event(
        event_time=kst(when),
        organization_id=organization,
        usage=pb.Usage(**usage),
    )


# --- KRW prices, versions, inheritance (the in-code catalog of tests/factories.py) ------------


def test_tokens_are_priced_exactly_in_decimal() -> None:
    rating = catalog().rate(event(usage=pb.Usage(input_tokens=1000, output_tokens=200)))
    # 1000 × 0.0036 (v2 is in force at NOW) + 200 × 0.0136
    assert rating.cost_krw == Decimal("6.320000")
    assert rating.price_version == "v2"
    assert isinstance(rating.cost_krw, Decimal)


def test_the_version_in_force_at_the_event_time_rates_it() -> None:
    before = event(event_time=kst("2026-10-31T23:59:59"))
    after = event(event_time=kst("2026-11-01T00:00:00"))
    assert catalog().rate(before).price_version == "v1"
    assert catalog().rate(after).price_version == "v2"
    assert catalog().rate(before).cost_krw == Decimal("6.120000")


def test_based_on_inherits_prices_it_does_not_override() -> None:
    seat = event(service_id="chatgpt", request_model="", usage=pb.Usage(seat_months=3))
    assert catalog().rate(seat).price_version == "v2"
    assert catalog().rate(seat).cost_krw == Decimal("87000")


def test_model_wildcard_prices_any_model_of_the_service() -> None:
    chat = event(service_id="chatgpt", request_model="gpt-5", usage=pb.Usage(input_tokens=9))
    assert catalog().rate(chat).cost_krw == 0


def test_missing_prices_are_unpriced_errors_naming_what_is_missing() -> None:
    with pytest.raises(UnpricedError, match="images"):
        catalog().rate(event(usage=pb.Usage(images=1)))
    with pytest.raises(UnpricedError, match="anthropic/claude"):
        catalog().rate(event(provider_name="anthropic", service_id="claude"))
    with pytest.raises(UnpricedError, match="no price version"):
        catalog().rate(event(event_time=NOW - timedelta(days=365)))


def broken(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CATALOG_DOC)
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("currency", "USD", "versions[0].prices[0].price: prices in USD need an FX table"),
        ("currency", "usd", "currency: 'usd' is not a three-letter currency code"),
        ("versions.0.prices.0.price", 0.0034, "versions[0].prices[0].price: must be a quoted"),
        ("versions.0.prices.1.price", "abc", "versions[0].prices[1].price"),
        ("versions.0.prices.1.price", "-1", "non-negative"),
        ("versions.0.prices.2.unit", "seats", "versions[0].prices[2].unit"),
        ("versions.0.prices.2.per", 0, "versions[0].prices[2].per: must be a whole number"),
        ("versions.0.effective_from", "2026-01-01T00:00:00", "UTC offset"),
        ("versions.1.based_on", "v9", "versions[1].based_on"),
        ("versions.1.version", "v1", "appears twice"),
        ("versions.0.prices.0.colour", "red", "versions[0].prices[0].colour: unknown key"),
    ],
)
def test_bad_catalogs_are_rejected_with_the_entry(path: str, value: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_catalog(broken(path, value), "prices.yaml")


tokens = st.integers(min_value=1, max_value=5_000_000)


@given(a_in=tokens, a_out=tokens, b_in=tokens, b_out=tokens)
def test_rating_is_additive_so_splitting_a_call_never_changes_the_bill(
    a_in: int, a_out: int, b_in: int, b_out: int
) -> None:
    def cost(i: int, o: int) -> Decimal:
        return catalog().rate(event(usage=pb.Usage(input_tokens=i, output_tokens=o))).cost_krw

    assert cost(a_in + b_in, a_out + b_out) == cost(a_in, a_out) + cost(b_in, b_out)


# --- vendor currencies and FX ----------------------------------------------------------------


def test_usd_prices_per_million_tokens_are_converted_at_the_rate_of_the_day(
    usd: PriceCatalog,
) -> None:
    rating = usd.rate(call("2025-01-20T10:00:00", input_tokens=1_000_000, output_tokens=1_000))
    # (1M × 2.50 + 1000 × 10.00) / 1M USD at 1391.25
    assert rating.cost_krw == Decimal("3492.037500")
    assert rating.price_version == "v1"


def test_money_never_passes_through_float(usd: PriceCatalog) -> None:
    # USD 0.0000025 a token: 7 tokens at 1391.25 is 0.024346875 KRW before rounding, which a
    # float would already get wrong in its last digits.
    price = usd.unit_price("openai", "openai-api", "gpt-4o", "input_tokens", kst_ts("2025-01-20"))
    assert isinstance(price, Decimal)
    assert price == Decimal("0.0000025") * USD_JAN == Decimal("0.003478125")
    seven = usd.rate(call("2025-01-20T10:00:00", input_tokens=7)).cost_krw
    assert isinstance(seven, Decimal)
    assert seven == quantize_cost(Decimal("0.024346875")) == Decimal("0.024347")
    assert 7 * 0.0000025 * 1391.25 != 0.024346875  # what float would have made of it


def kst_ts(day: str) -> float:
    return kst(f"{day}T12:00:00").timestamp()


@pytest.mark.parametrize(
    ("when", "rate"),
    [
        (kst("2025-01-31T23:59:59"), USD_JAN),
        (kst("2025-02-01T00:00:00"), USD_FEB),
        # 15:00 UTC on 31 January is midnight of 1 February in Seoul: the Seoul date decides.
        (datetime(2025, 1, 31, 14, 59, 59, tzinfo=UTC), USD_JAN),
        (datetime(2025, 1, 31, 15, 0, 0, tzinfo=UTC), USD_FEB),
    ],
)
def test_the_fx_rate_changes_at_midnight_in_seoul(
    usd: PriceCatalog, when: datetime, rate: Decimal
) -> None:
    whisper = event(
        event_time=when,
        organization_id="busan",
        request_model="whisper-1",
        usage=pb.Usage(audio_milliseconds=60_000),
    )
    # A minute of audio is USD 0.006 whichever version (v1 or v2) is in force.
    assert usd.rate(whisper).cost_krw == quantize_cost(Decimal("0.006") * rate)


def test_audio_seconds_price_the_stored_milliseconds_exactly(usd: PriceCatalog) -> None:
    whisper = call("2025-01-20T10:00:00", audio_milliseconds=1_501)
    whisper.request_model = "whisper-1"
    # 1.501 s at USD 0.0001 a second
    expected = Decimal("1.501") * Decimal("0.0001") * USD_JAN
    assert usd.rate(whisper).cost_krw == quantize_cost(expected)


@given(
    quantity=st.integers(min_value=1, max_value=10_000_000),
    cents=st.integers(min_value=0, max_value=100_000),
    per=st.sampled_from([1, 8, 25, 1000, 1_000_000]),
    rate_cents=st.integers(min_value=1, max_value=500_000),
)
def test_a_price_per_n_units_is_the_price_of_one_divided_by_n(
    quantity: int, cents: int, per: int, rate_cents: int
) -> None:
    price = Decimal(cents).scaleb(-2)
    rate = Decimal(rate_cents).scaleb(-2)
    doc = {
        "currency": "USD",
        "fx": {"rates": {"USD": [{"effective_from": "2025-01-01", "krw_per_unit": str(rate)}]}},
        "versions": [
            {
                "version": "v1",
                "effective_from": "2025-01-01",
                "prices": [
                    {
                        "provider": "openai",
                        "service": "openai-api",
                        "unit": "input_tokens",
                        "price": str(price),
                        "per": per,
                    }
                ],
            }
        ],
    }
    rating = parse_catalog(doc).rate(call("2025-06-01T10:00:00", input_tokens=quantity))
    assert rating.cost_krw == quantize_cost(Decimal(quantity) * price * rate / per)


def test_prices_in_several_currencies_are_each_converted(usd: PriceCatalog) -> None:
    # v2: tokens in USD, requests at KRW 5
    rating = usd.rate(call("2025-02-10T10:00:00", input_tokens=1_000_000, requests=3))
    assert rating.cost_krw == Decimal("2.50") * USD_FEB + 3 * 5
    assert rating.price_version == "v2"


def test_an_amount_without_a_rate_in_force_is_unpriced_naming_currency_and_date(
    usd: PriceCatalog,
) -> None:
    without_rates = PriceCatalog(usd.versions, fx=FxTable())
    with pytest.raises(UnpricedError, match="no USD to KRW rate is in force on 2025-01-20"):
        without_rates.rate(call("2025-01-20T10:00:00", input_tokens=10))
    # A free quantity needs no rate: nothing is converted.
    seat = call("2025-01-20T10:00:00", seat_months=2)
    seat.service_id, seat.request_model = "chatgpt", ""
    assert without_rates.rate(seat).cost_krw == 58000


# --- seat plans and contracts ----------------------------------------------------------------


def test_seat_plans_are_the_model_and_star_is_any_plan(usd: PriceCatalog) -> None:
    at = kst("2025-01-15T00:00:00")
    assert usd.seat_fee("openai", "chatgpt", "team", "busan", at) == (
        quantize_cost(Decimal("33.00") * USD_JAN),
        "v1",
    )
    assert usd.seat_fee("openai", "chatgpt", "business", "busan", at) == (Decimal(29000), "v1")
    assert usd.seat_fee("openai", "chatgpt", "", "busan", at) == (Decimal(29000), "v1")
    fee, _ = usd.seat_fee("openai", "chatgpt", "team", "busan", at)
    assert isinstance(fee, Decimal)
    with pytest.raises(UnpricedError, match="anthropic/claude/team"):
        usd.seat_fee("anthropic", "claude", "team", "busan", at)
    with pytest.raises(ValueError, match="UTC offset"):
        usd.seat_fee("openai", "chatgpt", "team", "busan", datetime(2025, 1, 15))


@pytest.mark.parametrize(
    ("organization", "when", "price", "version"),
    [
        ("seoul", "2025-02-28T23:59:59", "2.50", "v2"),  # before the contract
        ("seoul", "2025-03-01T00:00:00", "2.00", "v2+contract:seoul-2025"),
        ("seoul", "2025-03-31T23:59:59", "2.00", "v2+contract:seoul-2025"),
        ("seoul", "2025-04-01T00:00:00", "2.50", "v2"),  # after it ended
        ("busan", "2025-03-15T12:00:00", "2.50", "v2"),  # another organisation
    ],
)
def test_a_contract_prices_only_its_organisation_in_its_period(
    usd: PriceCatalog, organization: str, when: str, price: str, version: str
) -> None:
    rating = usd.rate(call(when, organization, input_tokens=1_000_000))
    assert rating.cost_krw == Decimal(price) * USD_FEB
    assert rating.price_version == version


def test_the_contract_is_named_only_when_one_of_its_prices_was_used(usd: PriceCatalog) -> None:
    # The contract replaces gpt-4o input tokens only; output tokens keep the version's price.
    mixed = usd.rate(call("2025-03-10T10:00:00", "seoul", input_tokens=1_000, output_tokens=1_000))
    assert mixed.price_version == "v2+contract:seoul-2025"
    assert mixed.cost_krw == quantize_cost((Decimal("2.00") + Decimal("10.00")) / 1000 * USD_FEB)
    outside = usd.rate(call("2025-03-10T10:00:00", "seoul", output_tokens=1_000))
    assert outside.price_version == "v2"
    fee = usd.seat_fee("openai", "chatgpt", "team", "seoul", kst("2025-03-01T00:00:00"))
    assert fee == (quantize_cost(Decimal("27.50") * USD_FEB), "v2+contract:seoul-2025")


def test_a_contract_cost_can_be_re_derived_from_its_price_version(usd: PriceCatalog) -> None:
    rating = usd.rate(call("2025-03-10T10:00:00", "seoul", input_tokens=123_457))
    version, contract = rating.price_version.split("+contract:")
    [entry] = [c for c in usd.contracts if c.name == contract]
    price = entry.prices[("openai", "openai-api", "gpt-4o")]["input_tokens"]
    assert [v.version for v in usd.versions if v.version == version] == ["v2"]
    assert rating.cost_krw == quantize_cost(123_457 * price.amount / price.per * USD_FEB)


# --- errors name the file, the line and the path ---------------------------------------------


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    return str(caught.value).removeprefix(f"{path}:")


def _edit(old: str, new: str) -> str:
    """PRICES_YAML with the first `old` replaced by `new`."""
    assert old in PRICES_YAML, old
    return PRICES_YAML.replace(old, new, 1)


WHISPER_MS = (
    "      - {provider: openai, service: openai-api, model: whisper-1, unit: audio_milliseconds, "
    'price: "0.0000001"}\n'
)
V1_FROM = '    effective_from: "2025-01-01T00:00:00+09:00"\n'


def _second_contract(start: str) -> str:
    return (
        "  - contract: seoul-2025b\n"
        "    organization: seoul\n"
        f'    effective_from: "{start}T00:00:00+09:00"\n'
        "    prices:\n"
        '      - {provider: openai, service: openai-api, unit: requests, price: "0"}\n'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _edit('price: "2.50"', "price: 2.50"),
            '12: versions[0].prices[0].price: must be a quoted decimal string, e.g. "0.0035"',
        ),
        (
            _edit('"10.00", per: 1000000}', '"10.00", per: 1000000, colour: red}'),
            "13: versions[0].prices[1].colour: unknown key 'colour'",
        ),
        (
            _edit("unit: output_tokens", "unit: input_tokens"),
            "13: versions[0].prices[1]: openai/openai-api/gpt-4o input_tokens is priced twice: "
            "already at versions[0].prices[0] on line 12",
        ),
        (
            _edit("per: 60}\n", "per: 60}\n" + WHISPER_MS),
            "15: versions[0].prices[3]: openai/openai-api/whisper-1 audio_milliseconds is "
            "priced twice: already at versions[0].prices[2] on line 14",
        ),
        (
            _edit("unit: seat_months", "unit: seats"),
            "15: versions[0].prices[3].unit: 'seats' is not one of input_tokens",
        ),
        (
            _edit('price: "33.00"', 'price: "-1"'),
            "16: versions[0].prices[4].price: must be a non-negative finite number",
        ),
        (
            _edit('"0.006", per: 60', '"0.01", per: 60'),
            "14: versions[0].prices[2].price: 0.01 per 60 audio_seconds is not an exact decimal",
        ),
        (
            _edit("per: 60", "per: 1.5"),
            "14: versions[0].prices[2].per: must be a whole number of units",
        ),
        (
            _edit("effective_from: 2025-01-01,", "effective_from: 2025-01-02,"),
            "12: versions[0].prices[0].price: no USD rate in fx on 2025-01-01, when version v1 "
            "takes effect (the first is on 2025-01-02)",
        ),
        (
            _edit('krw_per_unit: "1391.25"', "krw_per_unit: 1391.25"),
            '5: fx.rates.USD[0].krw_per_unit: must be a quoted decimal string, e.g. "1391.25"',
        ),
        (
            _edit("effective_from: 2025-02-01,", "effective_from: 2024-12-01,"),
            "6: fx.rates.USD[1].effective_from: 2024-12-01 must be later than the entry before",
        ),
        (
            _edit('"2025-02-01T00:00:00+09:00"', '"2024-12-01T00:00:00+09:00"'),
            "18: versions[1].effective_from: must be later than that of v1",
        ),
        (
            _edit('based_on: "v1"', 'based_on: "v9"'),
            "19: versions[1].based_on: 'v9' is not an earlier version",
        ),
        (
            _edit("    currency: USD\n", "    currency: usd\n"),
            "10: versions[0].currency: 'usd' is not a three-letter currency code",
        ),
        (
            _edit('until: "2025-04-01T00:00:00+09:00"', 'until: "2025-02-01T00:00:00+09:00"'),
            "26: contracts[0].effective_until: must be later than effective_from",
        ),
        (
            PRICES_YAML + _second_contract("2025-03-15"),
            "33: contracts[1].effective_from: contract seoul-2025b overlaps contract seoul-2025",
        ),
        (
            _edit(V1_FROM, V1_FROM + V1_FROM.replace("01-01", "01-02")),
            "10: versions[0].effective_from: the key is given twice (first on line 9)",
        ),
        (
            _edit(V1_FROM, V1_FROM.replace("+09:00", "")),
            "9: versions[0].effective_from: must carry a UTC offset",
        ),
        ("colour: red\n" + PRICES_YAML, "1: colour: unknown key 'colour'"),
        (_edit('version: "v2"', "version: [v2"), "18: not valid YAML"),
    ],
)
def test_every_error_names_the_file_the_line_and_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_a_contract_may_follow_another_of_its_organisation(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML + _second_contract("2025-04-01"), encoding="utf-8")
    names = {c.name for c in load_catalog(path).contracts}
    assert names == {"seoul-2025", "seoul-2025b"}


FX_BLOCK = PRICES_YAML[PRICES_YAML.index("fx:") : PRICES_YAML.index("versions:")]


def test_errors_in_the_fx_file_name_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "fx.yaml").write_text(
        'rates:\n  USD:\n    - {effective_from: 2025-01-01, krw_per_unit: "0"}\n',
        encoding="utf-8",
    )
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML.replace(FX_BLOCK, "fx_file: fx.yaml\n"), encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value) == (
        f"{tmp_path / 'fx.yaml'}:3: rates.USD[0].krw_per_unit: must be a positive number of won"
    )


def test_a_missing_fx_file_is_named_with_the_line_that_refers_to_it(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML.replace(FX_BLOCK, "fx_file: rates.yaml\n"), encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value) == (
        f"{path}:2: fx_file: the FX file {tmp_path / 'rates.yaml'} does not exist"
    )


def test_the_fx_table_is_read_from_the_file_next_to_the_catalog(tmp_path: Path) -> None:
    fx = yaml.safe_load(FX_BLOCK)["fx"]
    (tmp_path / "fx.yaml").write_text(yaml.safe_dump(fx), encoding="utf-8")
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML.replace(FX_BLOCK, "fx_file: fx.yaml\n"), encoding="utf-8")
    from_file = load_catalog(path)
    inline = parse_catalog(yaml.safe_load(PRICES_YAML))
    for when in ("2025-01-10T10:00:00", "2025-02-10T10:00:00"):
        api = call(when, input_tokens=777)
        assert from_file.rate(api) == inline.rate(api)
    assert [f.path for f in from_file.files] == [path, tmp_path / "fx.yaml"]


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text("versions: [", encoding="utf-8")
    with pytest.raises(CatalogError, match=str(bad)):
        load_catalog(bad)


# --- the shipped catalog ---------------------------------------------------------------------


def test_the_shipped_catalog_loads_with_its_fx_table() -> None:
    shipped = load_catalog(REPO / "config" / "prices.yaml")
    assert [v.version for v in shipped.versions] == ["2024-01", "2024-10", "2025-02"]
    assert [f.path.name for f in shipped.files] == ["prices.yaml", "fx.yaml"]


def test_the_shipped_catalog_converts_usd_list_prices_at_the_rate_of_the_day() -> None:
    shipped = load_catalog(REPO / "config" / "prices.yaml")
    fx = yaml.safe_load((REPO / "config" / "fx.yaml").read_text(encoding="utf-8"))
    for row in fx["rates"]["USD"]:
        day = row["effective_from"]
        rate = Decimal(row["krw_per_unit"])
        when = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
        api = event(event_time=when, usage=pb.Usage(input_tokens=1_000_000, output_tokens=10))
        rating = shipped.rate(api)
        assert rating.price_version == "2025-02"
        # gpt-4o list prices: USD 2.50 and 10.00 per 1M tokens
        assert rating.cost_krw == quantize_cost((Decimal("2.50") + Decimal("0.0001")) * rate)
        seat = shipped.seat_fee("openai", "chatgpt", "", "busan", when)
        assert seat == (Decimal(29000), "2025-02")  # the KRW seat price is kept


def test_the_shipped_2024_versions_keep_their_krw_prices() -> None:
    shipped = load_catalog(REPO / "config" / "prices.yaml")
    for version in shipped.versions[:2]:
        for units in version.prices.values():
            for price in units.values():
                assert price.currency == "KRW"
                assert price.per_quantity % Decimal("0.0002") == 0  # the scenario relies on it


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["*", "USD", "KRW", "v1", "2025-01-01", "1e400", "NaN", "-0", "input_tokens"]),
    st.dates(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


DOCUMENT = yaml.safe_load(PRICES_YAML)
PATHS = _paths(DOCUMENT)[1:]


@given(where=st.sampled_from(PATHS), value=values)
def test_any_malformed_catalog_is_a_catalog_error_and_nothing_else(
    where: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(DOCUMENT)
    node = doc
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    try:
        parse_catalog(doc, "prices.yaml")
    except CatalogError as exc:
        assert str(exc).startswith("prices.yaml: ")
