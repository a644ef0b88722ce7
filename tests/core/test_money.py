from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from civicmeter.api.money import from_money, quantize_cost, to_money


@given(
    st.decimals(
        min_value=Decimal("-1e12"),
        max_value=Decimal("1e12"),
        places=6,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_money_round_trips_exactly(amount: Decimal) -> None:
    money = to_money(amount)
    assert from_money(money) == amount
    assert money.currency_code == "KRW"
    # google.type.Money: units and nanos agree in sign.
    assert (money.units >= 0 and money.nanos >= 0) or (money.units <= 0 and money.nanos <= 0)


def test_costs_keep_six_decimal_places_with_bankers_rounding() -> None:
    assert quantize_cost(Decimal("0.0000005")) == Decimal("0.000000")
    assert quantize_cost(Decimal("0.0000015")) == Decimal("0.000002")
