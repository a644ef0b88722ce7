"""A token bucket per key (an API key, a peer address): `rate` calls a second, bursts of `burst`.

Buckets that have refilled completely are forgotten once there are more than `max_keys`, so
a flood from many addresses cannot grow the table without bound.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max_keys:
            self._forget_full(now)
        return allowed

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` may call again (0 when it may now)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        missing = 1.0 - min(self.burst, tokens + (now - last) * self.rate)
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            key: (tokens, last)
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate < self.burst
        }
