"""Memory growth over a soak, read so that one sample cannot make or hide it.

A service's resident memory sampled every few seconds swings around its level: the storage
process's by ±20-30 MB from one sample to the next (a merge's buffers, pages the engine has
freed and not yet returned). Growth is therefore the level of the last minute against the
level of the minute after warm-up, each the median of its samples, beside the least-squares
trend over everything after warm-up and the range the samples span.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

WARM_UP = 0.2  # the first fifth of the soak: caches, thread pools and buffers fill
WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Growth:
    first: float  # the first sample
    warm: float  # median of the window after warm-up
    last: float  # median of the last window
    trend_per_minute: float  # least-squares slope after warm-up
    low: float  # the lowest and highest sample after warm-up
    high: float

    @property
    def ratio(self) -> float:
        """Growth of the last window's level over the level after warm-up."""
        return self.last / self.warm - 1 if self.warm else 0.0


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (x, y) points."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def growth(
    samples: Sequence[tuple[float, float]],
    warm_up: float = WARM_UP,
    window: float = WINDOW_SECONDS,
) -> Growth:
    """Growth of (seconds, value) samples in time order, at least two of them."""
    if len(samples) < 2:
        raise ValueError("a soak needs at least two samples")
    start, end = samples[0][0], samples[-1][0]
    warm_at = start + (end - start) * warm_up
    after = [(t, v) for t, v in samples if t >= warm_at]
    warm = [v for t, v in after if t < warm_at + window] or [after[0][1]]
    last = [v for t, v in after if t > end - window] or [after[-1][1]]
    return Growth(
        first=samples[0][1],
        warm=statistics.median(warm),
        last=statistics.median(last),
        trend_per_minute=slope([(t / 60, v) for t, v in after]),
        low=min(v for _, v in after),
        high=max(v for _, v in after),
    )
