"""Money as Decimal, never float, with the conversions the wire formats need."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from google.type import money_pb2

KRW = "KRW"
# Stored costs keep six decimal places: token prices are fractions of a won.
COST_QUANTUM = Decimal("0.000001")
_NANOS = Decimal(1_000_000_000)


def quantize_cost(amount: Decimal) -> Decimal:
    """Round a cost to the stored precision (banker's rounding, as ledgers do)."""
    return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def to_money(amount: Decimal, currency: str = KRW) -> money_pb2.Money:
    """google.type.Money from a Decimal; nanos carry the fraction exactly to 1e-9."""
    units = int(amount)  # truncates toward zero, as Money requires units and nanos to agree in sign
    nanos = int((amount - units) * _NANOS)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def from_money(money: money_pb2.Money) -> Decimal:
    return Decimal(money.units) + Decimal(money.nanos) / _NANOS
