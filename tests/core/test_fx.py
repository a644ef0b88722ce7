from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.core.pricing.fx import (
    FxError,
    FxTable,
    load_fx,
    parse_fx,
    seoul_date,
    seoul_midnight,
)

REPO = Path(__file__).resolve().parents[2]
TABLE = FxTable(
    {
        "USD": [(date(2025, 1, 1), Decimal("1391.25")), (date(2025, 2, 1), Decimal("1450.00"))],
        "JPY": [(date(2025, 1, 15), Decimal("9.1234"))],
    }
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_rate_is_in_force_from_seoul_midnight_of_its_date_until_the_next() -> None:
    assert TABLE.rate("USD", at("2024-12-31T23:59:59+09:00")) is None
    assert TABLE.rate("USD", at("2025-01-01T00:00:00+09:00")) == Decimal("1391.25")
    assert TABLE.rate("USD", at("2025-01-31T23:59:59+09:00")) == Decimal("1391.25")
    assert TABLE.rate("USD", at("2025-02-01T00:00:00+09:00")) == Decimal("1450.00")
    assert TABLE.rate("USD", at("2030-01-01T00:00:00+09:00")) == Decimal("1450.00")
    # 23:30 UTC on 31 January is already 1 February in Seoul
    assert TABLE.rate("USD", at("2025-01-31T23:30:00+00:00")) == Decimal("1450.00")


def test_krw_is_one_and_an_unknown_currency_has_no_rate() -> None:
    assert TABLE.rate("KRW", 0) == 1
    assert TABLE.rate("EUR", at("2025-06-01T00:00:00+09:00")) is None
    assert TABLE.first_date("JPY") == date(2025, 1, 15)
    assert TABLE.currencies == ("JPY", "USD")


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_the_seoul_date_starts_at_its_midnight(moment: datetime) -> None:
    seconds = moment.replace(tzinfo=UTC).timestamp()
    day = seoul_date(seconds)
    assert seoul_midnight(day) <= seconds < seoul_midnight(day) + 86_400


@given(
    days=st.lists(st.dates(date(2020, 1, 1), date(2030, 1, 1)), min_size=1, unique=True),
    probe=st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2031, 1, 1)),
)
def test_the_rate_in_force_is_the_latest_on_or_before_the_seoul_date(
    days: list[date], probe: datetime
) -> None:
    ordered = sorted(days)
    rates = [(day, Decimal(n + 1)) for n, day in enumerate(ordered)]
    table = FxTable({"USD": rates})
    seconds = probe.replace(tzinfo=UTC).timestamp()
    earlier = [rate for day, rate in rates if day <= seoul_date(seconds)]
    assert table.rate("USD", seconds) == (earlier[-1] if earlier else None)


def test_the_shipped_fx_table_loads() -> None:
    table = load_fx(REPO / "config" / "fx.yaml")
    raw = yaml.safe_load((REPO / "config" / "fx.yaml").read_text(encoding="utf-8"))
    assert table.currencies == tuple(sorted(raw["rates"]))
    assert [str(rate) for _, rate in table.rates("USD")] == [
        row["krw_per_unit"] for row in raw["rates"]["USD"]
    ]


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fx.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FxError) as caught:
        load_fx(path)
    return str(caught.value).removeprefix(f"{path}:")


GOOD = 'rates:\n  USD:\n    - {effective_from: 2025-01-01, krw_per_unit: "1391.25"}\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace('"1391.25"', "1391.25"), "3: rates.USD[0].krw_per_unit: must be a quoted"),
        (GOOD.replace('"1391.25"', '"-3"'), "3: rates.USD[0].krw_per_unit: must be a positive"),
        (GOOD.replace('"1391.25"', '"a lot"'), "3: rates.USD[0].krw_per_unit: 'a lot' is not"),
        (GOOD.replace("2025-01-01", "2025-13-01"), "3: rates.USD[0].effective_from: "),
        (
            GOOD.replace("2025-01-01", "2025-01-01T09:00:00+09:00"),
            "3: rates.USD[0].effective_from: must be a date (YYYY-MM-DD, a Seoul calendar day)",
        ),
        (GOOD.replace("USD", "usd"), "2: rates.usd: must be a three-letter currency code"),
        (GOOD.replace("USD", "KRW"), "2: rates.KRW: KRW is the base currency"),
        (
            GOOD + '    - {effective_from: 2025-01-01, krw_per_unit: "1400"}\n',
            "4: rates.USD[1].effective_from: 2025-01-01 must be later than the entry before",
        ),
        (GOOD.replace("krw_per_unit", "rate"), "3: rates.USD[0].rate: unknown key 'rate'"),
        (GOOD + "source: bok\n", "4: source: unknown key 'source'"),
        ("rates: {}\n", "1: rates: must map currency codes to lists of dated rates"),
        ("rates:\n  USD: []\n", "2: rates.USD: must be a non-empty list"),
        (GOOD + "  USD:\n    - {}\n", "4: rates.USD: the key is given twice (first on line 2)"),
    ],
)
def test_bad_fx_files_are_rejected_with_line_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _load(tmp_path, text).startswith(expected)


def test_a_quoted_date_is_a_date_too() -> None:
    table = parse_fx(
        {"rates": {"USD": [{"effective_from": "2025-01-01", "krw_per_unit": "1391.25"}]}}
    )
    assert table.rates("USD") == [(date(2025, 1, 1), Decimal("1391.25"))]
