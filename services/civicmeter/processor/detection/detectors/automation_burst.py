"""Requests faster or more regular than a person makes them: a script behind a person's seat.

Fires when more than `max_requests` of a user's requests fall within `window_seconds`, or when
their last `regular_intervals` gaps are nearly equal (coefficient of variation at most
`max_interval_cv`) and short (mean at most `max_mean_interval_seconds`). Once a day per user.

"Gaps this alike" means gaps between consecutive requests: random (Poisson) requests give ten
gaps in a row with a variation under 10% about once in 10^8 tries. A script running while
its owner works has the person's own requests in between; picking a regular-looking chain out
of many requests is what chance does easily (about 1% of busy people's days), so such a chain
counts only when it is too exact to be chance: when random requests at the person's pace (the
faster of their pace over the chain's span and over all the requests remembered) would put one
within the chain's largest deviation of every beat with a probability under _MAX_CHANCE.
`python -m loadtests.misuse.automation` measures both rules.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from civicmeter.policy.detectors import AutomationBurstSettings
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS

# Requests of one user arrive nearly in time order (one partition per user); a window whose
# newest and oldest arrivals are further apart than this cannot hold a burst.
_DISORDER_SECONDS = 300.0
# A script's chain may have up to this many of the person's requests in between.
_INTERLOPERS = 24
# The chance below which a chain with requests in between is too exact for random requests.
# The search tests at most _INTERLOPERS + 1 periods per request: with 300 requests a day, this
# bounds the false alerts of that rule by 300 x 25 x 1e-9, under 8 per million user-days.
_MAX_CHANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Regular:
    """A chain of evenly spaced requests ending at the latest one."""

    mean: float  # seconds between the chain's requests
    cv: float  # coefficient of variation of its gaps
    others: int  # the person's own requests in between (0: in a row)
    deviation: float  # the largest difference of a gap from the period, in seconds
    chance: float  # with others: how likely random requests at this pace line up like this


# A rate burst (requests, seconds) or a regular chain.
Finding = tuple[int, float] | Regular


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
        recent = self.recent((ctx.organization_id, ctx.user_id), settings)
        recent.times.append(ctx.seconds)
        if recent.alerted_day == ctx.day:
            return NO_ALERTS
        found = self.finding(recent, settings)
        return NO_ALERTS if found is None else self.raise_alert(ctx, recent, settings, found)

    def recent(self, key: tuple[str, str], settings: AutomationBurstSettings) -> Recent:
        """A user's recent request times (marked as just used), sized for the settings."""
        size = self.window_size(settings)
        recent = self._users.get(key)
        if recent is None or recent.times.maxlen != size:
            recent = Recent(deque(recent.times if recent else (), maxlen=size))
            self._users.put(key, recent)
        return recent

    @property
    def lookup(self) -> Callable[[tuple[str, str]], Recent | None]:
        """A user's window without marking it used (then `touch`)."""
        return self._users.lookup

    @staticmethod
    def window_size(settings: AutomationBurstSettings) -> int:
        """The requests a user's window holds for these settings."""
        return max(settings.max_requests, settings.regular_intervals + _INTERLOPERS) + 1

    @staticmethod
    def least_requests(settings: AutomationBurstSettings) -> int:
        """The fewest request times `finding` looks at: with fewer, it finds nothing."""
        return min(settings.max_requests + 1, settings.regular_intervals + 1)

    def touch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Mark the windows of `keys` as just used, in turn; for users whose window `recent`
        made (or resized) for the same settings since it was last evicted."""
        self._users.touch(keys)

    @staticmethod
    def finding(recent: Recent, settings: AutomationBurstSettings) -> Finding | None:
        """What the request times just added to `recent` show: a rate, a regular chain, or
        None (the engine asks this of every request, and builds an alert only when found)."""
        times = recent.times
        found = _rate(times, settings.max_requests, settings.window_seconds)
        if found is not None:
            return found
        return _regular(
            times,
            settings.regular_intervals,
            settings.max_interval_cv,
            settings.max_mean_interval_seconds,
        )

    def raise_alert(
        self,
        ctx: EventContext,
        recent: Recent,
        settings: AutomationBurstSettings,
        found: Finding,
    ) -> Sequence[Alert]:
        if not isinstance(found, Regular):
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
            regular = found
            text, text_ko = _explain_regular(ctx, settings.regular_intervals + 1, regular)
            attributes = {
                "pattern": "regular",
                "requests": str(settings.regular_intervals + 1),
                "mean_interval_seconds": f"{regular.mean:.2f}",
                "interval_cv": f"{regular.cv:.4f}",
                "requests_in_between": str(regular.others),
            }
            if regular.others:
                attributes["chance"] = f"{regular.chance:.1e}"
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

    def export(self, key: tuple[str, str]) -> list[Any] | None:
        """A user's recent request times and alerted day, as plain values; None when unknown."""
        recent = self._users.peek(key)
        if recent is None:
            return None
        return [list(recent.times), recent.times.maxlen, recent.alerted_day]

    def restore(self, key: tuple[str, str], values: Sequence[Any]) -> None:
        times, maxlen, alerted_day = values
        self._users.put(key, Recent(deque(times, maxlen=maxlen), alerted_day))

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, key: object) -> bool:
        return key in self._users


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


def _explain_regular(ctx: EventContext, requests: int, regular: Regular) -> tuple[str, str]:
    mean, cv, when = regular.mean, regular.cv, ctx.when
    if not regular.others:
        return (
            f"{ctx.who} made {requests} requests in a row at near-constant intervals of "
            f"{mean:.1f} s (variation {cv:.1%}), up to {when}, as a script would.",
            f"{ctx.who_ko}이(가) {when}까지 {mean:.1f}초 간격으로 일정하게(변동 {cv:.1%}) "
            f"연속 {requests}건을 요청했습니다 (자동화 의심).",
        )
    return (
        f"{ctx.who} made {requests} requests at near-constant intervals of {mean:.1f} s "
        f"(variation {cv:.1%}, each gap within {regular.deviation:.1f} s of the period), up to "
        f"{when}, with {regular.others} other requests of theirs in between: a script running "
        "while they work. Requests at their pace would line up this exactly by chance about "
        f"once in {1 / max(regular.chance, 1e-300):.0e} tries.",
        f"{ctx.who_ko}이(가) {when}까지 {mean:.1f}초 간격으로 일정하게(변동 {cv:.1%}, 간격 오차 "
        f"{regular.deviation:.1f}초 이내) {requests}건을 요청했고, 그 사이에 본인의 다른 요청 "
        f"{regular.others}건이 있었습니다: 업무 중 실행되는 스크립트로 보입니다 (자동화 의심).",
    )


def _regular(times: deque[float], intervals: int, max_cv: float, max_mean: int) -> Regular | None:
    """A regular chain of `intervals` + 1 requests ending at the latest one (by event time: a
    late arrival may complete it): in a row, or too exact to be chance with the person's own
    requests in between."""
    need = intervals + 1
    if len(times) < need:
        return None
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered[-need:])]
    # No gap of `intervals` with this variation is further than max_cv x sqrt(intervals - 1)
    # means from their mean: a cheap test that rejects nearly every person's gaps.
    spread = max_cv * math.sqrt(intervals - 1)
    short, long = min(gaps), max(gaps)
    in_a_row = (
        _alike(gaps, max_cv, max_mean)
        if spread >= 1 or long * (1 - spread) <= short * (1 + spread)
        else None
    )
    if in_a_row is not None:
        mean, cv, deviation = in_a_row
        return Regular(mean, cv, 0, deviation, 1.0)
    return _interleaved(ordered, intervals, max_cv, max_mean)


def _alike(gaps: list[float], max_cv: float, max_mean: float) -> tuple[float, float, float] | None:
    """(mean, coefficient of variation, largest deviation from the mean) of gaps this alike."""
    mean = sum(gaps) / len(gaps)
    if not 0 < mean <= max_mean:
        return None
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    if cv > max_cv:
        return None
    return mean, cv, max(abs(g - mean) for g in gaps)


def _interleaved(
    ordered: list[float], intervals: int, max_cv: float, max_mean: int
) -> Regular | None:
    need = intervals + 1
    last = len(ordered) - 1
    newest = ordered[last]
    # The widest deviation a chain may have and still pass: pace >= need / span, span <=
    # 1.5 x intervals x period, and (1 - e^(-2 pace deviation))^(intervals - 1) <= _MAX_CHANCE.
    most = -math.log1p(-(_MAX_CHANCE ** (1 / (intervals - 1))))  # 2 x pace x deviation
    widest = most * 1.5 * intervals / (2 * need)
    # Random requests at the pace of all those remembered, or of those in the chain's span,
    # whichever is faster (the faster, the likelier a chance alignment: the cautious choice).
    overall = last / (newest - ordered[0]) if newest > ordered[0] else math.inf
    widest_seconds = most / (2 * overall)
    ratio = min(widest, 3 * max_cv)
    # The script's period is the gap from the newest request to one of the few before it.
    # `near` follows the latest request at or before the chain's third beat (its upper bound
    # 2 x before - newest + slack only falls as the period grows): most periods end there.
    near = last - 2
    # (Written out with comparisons rather than min(): every request runs this loop.)
    for before in range(last - 1, max(-1, last - 2 - _INTERLOPERS), -1):
        beat = ordered[before]
        period = newest - beat
        if period > max_mean:
            break
        if period <= 0:
            continue
        slack = period * ratio
        if slack > widest_seconds:
            slack = widest_seconds
        target = beat - period
        if near >= before:
            near = before - 1
        highest = target + slack
        while near >= 0 and ordered[near] > highest:
            near -= 1
        if near < 0:
            break  # nothing old enough for this period or any longer one
        if ordered[near] < target - slack:
            continue
        chain = _chain(ordered, before, period, slack, need)
        if chain is None:
            continue
        oldest = ordered[chain[-1]]
        others = last - chain[-1] + 1 - need
        gaps = [ordered[a] - ordered[b] for a, b in itertools.pairwise(chain)]
        alike = _alike(gaps, max_cv, max_mean)
        if others <= 0 or alike is None:
            continue
        # Beyond the first gap (which sets the period), each beat of random requests at this
        # pace has a request within `deviation` of it with probability 1 - e^(-2 pace dev).
        deviation = max(abs(g - period) for g in gaps[1:])
        pace = max(overall, (last - chain[-1] + 1) / (newest - oldest))
        chance = (-math.expm1(-2 * pace * deviation)) ** (intervals - 1)
        if chance <= _MAX_CHANCE:
            mean, cv, _ = alike
            return Regular(mean, cv, others, deviation, chance)
    return None


def _chain(
    ordered: list[float], before: int, period: float, slack: float, need: int
) -> list[int] | None:
    """Indexes into `ordered` of `need` requests from the newest back through `before`, each
    within `slack` of `period` before the last (the closest when several are), skipping those
    in between; None when the chain breaks."""
    chain = [len(ordered) - 1, before]
    while len(chain) < need:
        target = ordered[chain[-1]] - period
        low = bisect.bisect_left(ordered, target - slack, 0, chain[-1])
        high = bisect.bisect_right(ordered, target + slack, low, chain[-1])
        if low == high:
            return None
        chain.append(min(range(low, high), key=lambda i: abs(ordered[i] - target)))
    return chain
