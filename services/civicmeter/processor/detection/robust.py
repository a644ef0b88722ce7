"""Robust statistics for baselines: the median and the median absolute deviation (MAD).

A baseline's limit is the largest of three: median + k * 1.4826 * MAD (k robust standard
deviations; 1.4826 makes the MAD estimate the standard deviation of normal data), factor *
median, and an absolute floor. One heavy day in a baseline moves none of them much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

MAD_TO_SIGMA = 1.4826
_MAD_TO_SIGMA_DECIMAL = Decimal("1.4826")

N = TypeVar("N", float, Decimal)


def median(values: Sequence[N]) -> N:
    if not values:
        raise ValueError("the median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def mad(values: Sequence[N], center: N) -> N:
    """The median absolute deviation from `center`."""
    return median([abs(v - center) for v in values])


@dataclass(frozen=True)
class Limit(Generic[N]):
    limit: N
    median: N
    mad: N


def robust_limit(values: Sequence[float], factor: float, k: float, floor: float) -> Limit[float]:
    center = median(values)
    spread = mad(values, center)
    return Limit(max(center + k * MAD_TO_SIGMA * spread, factor * center, floor), center, spread)


def robust_limit_decimal(
    values: Sequence[Decimal], factor: Decimal, k: Decimal, floor: Decimal
) -> Limit[Decimal]:
    center = median(values)
    spread = mad(values, center)
    limit = max(center + k * _MAD_TO_SIGMA_DECIMAL * spread, factor * center, floor)
    return Limit(limit, center, spread)
