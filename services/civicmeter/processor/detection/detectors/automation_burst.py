"""Requests faster or more regular than a person makes them: a script behind a person's seat.

Fires when more than `max_requests` of a user's requests fall within `window_seconds`, or when
their last `regular_intervals` gaps are nearly equal (coefficient of variation at most
`max_interval_cv`) and short (mean at most `max_mean_interval_seconds`). Once a day per user.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS

# Requests of one user arrive nearly in time order (one partition per user); a window whose
# newest and oldest arrivals are further apart than this cannot hold a burst.
_DISORDER_SECONDS = 300.0
# Up to this many of a script's requests may have requests of the person in between; a chained
# gap may differ from the period by _CHAIN_TOLERANCE times max_interval_cv before the chain's
# variation is tested against max_interval_cv itself.
_INTERLOPERS = 8
_CHAIN_TOLERANCE = 3.0


@dataclass(slots=True)
class Recent:
    times: deque[float]
    alerted_day: int = 0


class AutomationBurstDetector:
    name = "automation_burst"

    def __init__(self, users: int) -> None:
        self._users: LruMap[tuple[str, str], Recent] = LruMap(users)

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if not ctx.activity:
            return NO_ALERTS
        settings = ctx.policy.detectors.automation_burst
        key = (ctx.organization_id, ctx.user_id)
        size = max(settings.max_requests, settings.regular_intervals + _INTERLOPERS) + 1
        recent = self._users.get(key)
        if recent is None or recent.times.maxlen != size:
            recent = Recent(deque(recent.times if recent else (), maxlen=size))
            self._users.put(key, recent)
        times = recent.times
        times.append(ctx.seconds)
        if recent.alerted_day == ctx.day:
            return NO_ALERTS
        found = _rate(times, settings.max_requests, settings.window_seconds)
        if found is not None:
            count, span = found
            text = (
                f"{ctx.who} made {count} requests within {span:.0f} seconds, up to {ctx.when} "
                f"(more than {settings.max_requests} in {settings.window_seconds} s is faster "
                "than a person works)."
            )
            text_ko = (
                f"{ctx.who_ko}이(가) {ctx.when}까지 {span:.0f}초 동안 {count}건을 요청했습니다 "
                f"({settings.window_seconds}초에 {settings.max_requests}건 초과: 자동화 의심)."
            )
            attributes = {"pattern": "rate", "requests": str(count), "span_seconds": f"{span:.1f}"}
        else:
            regular = _regular(
                times,
                settings.regular_intervals,
                settings.max_interval_cv,
                settings.max_mean_interval_seconds,
            )
            if regular is None:
                return NO_ALERTS
            mean, cv = regular
            text = (
                f"{ctx.who} made {settings.regular_intervals + 1} requests at near-constant "
                f"intervals of {mean:.1f} s (variation {cv:.1%}), up to {ctx.when}, as a script "
                "would."
            )
            text_ko = (
                f"{ctx.who_ko}이(가) {ctx.when}까지 {mean:.1f}초 간격으로 일정하게(변동 {cv:.1%}) "
                f"{settings.regular_intervals + 1}건을 요청했습니다 (자동화 의심)."
            )
            attributes = {
                "pattern": "regular",
                "requests": str(settings.regular_intervals + 1),
                "mean_interval_seconds": f"{mean:.2f}",
                "interval_cv": f"{cv:.4f}",
            }
        recent.alerted_day = ctx.day
        return (
            ctx.alert(
                self.name,
                settings.severity,
                (ctx.user_id, ctx.day_label),
                text,
                text_ko,
                attributes,
            ),
        )

    def __len__(self) -> int:
        return len(self._users)


def _rate(times: deque[float], max_requests: int, window: int) -> tuple[int, float] | None:
    """(requests, seconds) when the last max_requests + 1 requests fall within `window`."""
    n = len(times)
    if n <= max_requests or abs(times[-1] - times[-max_requests - 1]) > window + _DISORDER_SECONDS:
        return None
    last = list(itertools.islice(times, n - max_requests - 1, n))
    newest = max(last)
    span = newest - min(last)
    if span > window:
        return None
    # Every remembered request within the window ending at the newest one.
    count = sum(1 for t in times if newest - window <= t <= newest)
    return count, span


def _regular(
    times: deque[float], intervals: int, max_cv: float, max_mean: int
) -> tuple[float, float] | None:
    """(mean gap, coefficient of variation) when the latest request ends a chain of
    `intervals` + 1 evenly spaced ones, even with some of the person's own requests in
    between (a script running while they work)."""
    need = intervals + 1
    if len(times) < need:
        return None
    tolerance = _CHAIN_TOLERANCE * max_cv
    # The chain ends at the latest request (by event time: a late arrival may complete it).
    newest = max(times)
    horizon = newest - intervals * max_mean * (1 + tolerance)
    earlier = sorted((t for t in times if horizon <= t < newest), reverse=True)
    if len(earlier) < intervals:
        return None
    # The script's period is the gap from the newest request to one of the few before it.
    for before in earlier[: _INTERLOPERS + 1]:
        period = newest - before
        if period > max_mean:
            break
        chain = _chain(newest, earlier, period, tolerance, need)
        if chain is None:
            continue
        gaps = [a - b for a, b in itertools.pairwise(chain)]
        mean = (chain[0] - chain[-1]) / intervals
        cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / intervals) / mean
        if cv <= max_cv:
            return mean, cv
    return None


def _chain(
    newest: float, earlier: list[float], period: float, tolerance: float, need: int
) -> list[float] | None:
    """`need` times from `newest` back, each about `period` before the last (the closest to
    it when several are near), skipping those in between; None when the chain breaks."""
    low, high = period * (1 - tolerance), period * (1 + tolerance)
    chain = [newest]
    best: float | None = None
    for moment in earlier:
        gap = chain[-1] - moment
        if gap < low:
            continue
        if gap <= high:
            if best is None or abs(gap - period) < abs(chain[-1] - best - period):
                best = moment
            continue
        if best is None:
            return None
        chain.append(best)
        if len(chain) == need:
            return chain
        best = None
        gap = chain[-1] - moment
        if low <= gap <= high:
            best = moment
        elif gap > high:
            return None
    if best is not None:
        chain.append(best)
    return chain if len(chain) >= need else None
