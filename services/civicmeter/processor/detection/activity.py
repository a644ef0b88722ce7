"""Each user's requests and spend per local day, and their baseline over past active days.

Shared by the volume and peer detectors. A day is the organisation's local day; an active
day is one with at least one request. When a user's first request of a new day arrives, the
day before joins the history (the last `history_days` active days) and today's limits are
worked out once from it (see robust.py); until `warmup_days` active days are known, none.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from civicmeter.policy.detectors import VolumeSpikeSettings
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.robust import Limit, robust_limit, robust_limit_decimal
from civicmeter.processor.detection.user_activity import ZERO, DayTotals, UserActivity


class ActivityTracker:
    def __init__(self, capacity: int) -> None:
        self._users: LruMap[tuple[str, str], UserActivity] = LruMap(capacity)

    def observe(self, ctx: EventContext) -> UserActivity | None:
        """Count a request; the user's state when it belongs to their current day, or None
        when it is a late arrival for an earlier day (counted in the history, judged never)."""
        state = self._on_day(ctx)
        if state.day > ctx.day:
            _add_late(state, ctx.day, ctx.cost)
            return None
        state.count += 1
        state.cost += ctx.cost
        return state

    def assign(self, ctx: EventContext, count: int, cost: Decimal) -> UserActivity | None:
        """Set a user's totals for the event's day to `count` and `cost` (absolute totals,
        counted elsewhere): as `observe`, the state when it is the current day, None for an
        earlier day. Setting the same totals twice changes nothing."""
        return self.assign_day(
            (ctx.organization_id, ctx.user_id),
            ctx.department_id,
            ctx.day,
            ctx.policy.detectors.volume_spike,
            count,
            cost,
        )

    def assign_day(
        self,
        key: tuple[str, str],
        department_id: str,
        day: int,
        settings: VolumeSpikeSettings,
        count: int,
        cost: Decimal,
    ) -> UserActivity | None:
        """`assign` of a user's day totals reported without an event (an activity update)."""
        state = self._day_state(key, department_id, day, settings)
        if state.day > day:
            _set_day(state, day, count, cost)
            return None
        state.count = count
        state.cost = cost
        return state

    def _on_day(self, ctx: EventContext) -> UserActivity:
        """The user's state, rolled over to the event's day when that is a later one."""
        return self._day_state(
            (ctx.organization_id, ctx.user_id),
            ctx.department_id,
            ctx.day,
            ctx.policy.detectors.volume_spike,
        )

    def _day_state(
        self, key: tuple[str, str], department_id: str, day: int, settings: VolumeSpikeSettings
    ) -> UserActivity:
        state = self._users.get(key)
        if state is None:
            state = UserActivity(department_id, day, history=deque(maxlen=settings.history_days))
            self._users.put(key, state)
        elif day > state.day:
            _roll(state, day, settings)
        if day >= state.day:
            state.department = department_id
        return state

    def day_totals(self, organization_id: str, user_id: str, day: int) -> tuple[int, Decimal]:
        """A user's requests and cost on a day: the current one or one in the history."""
        state = self._users.peek((organization_id, user_id))
        if state is None:
            return 0, ZERO
        if state.day == day:
            return state.count, state.cost
        for past, count, cost in state.history:
            if past == day:
                return count, cost
        return 0, ZERO

    def current(self, key: tuple[str, str]) -> UserActivity | None:
        """A user's state marked as just used, as observe marks it; None when unknown."""
        return self._users.get(key)

    @property
    def lookup(self) -> Callable[[tuple[str, str]], UserActivity | None]:
        """A user's state without marking it used (then `touch`)."""
        return self._users.lookup

    def touch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Mark the known users among `keys` as just used, in turn (as `current` would)."""
        self._users.touch(keys)

    def peek(self, organization_id: str, user_id: str) -> UserActivity | None:
        return self._users.peek((organization_id, user_id))

    def export(self, key: tuple[str, str]) -> list[Any] | None:
        """A user's state as plain values (state.py encodes them), None when unknown. The
        amounts stay Decimal: msgspec encodes one as its str(), the string restore reads."""
        state = self._users.peek(key)
        if state is None:
            return None
        return [
            state.department,
            state.day,
            state.count,
            state.cost,
            list(state.history),  # (day, count, cost) tuples, encoded as arrays
            state.history.maxlen,
            _limit_values(state.count_limit),
            _limit_values(state.cost_limit),
            state.volume_alerted_day,
            state.peer_alerted_month,
        ]

    def restore(self, key: tuple[str, str], values: Sequence[Any]) -> UserActivity:
        """Put back a user's state from `export`'s values."""
        department, day, count, cost, history, maxlen, count_limit, cost_limit = values[:8]
        state = UserActivity(
            department,
            day,
            count,
            Decimal(cost),
            deque(((d, c, Decimal(s)) for d, c, s in history), maxlen=maxlen),
            None if count_limit is None else Limit(*(float(v) for v in count_limit)),
            None if cost_limit is None else Limit(*(Decimal(v) for v in cost_limit)),
            values[8],
            values[9],
        )
        self._users.put(key, state)
        return state

    def seed(
        self,
        organization_id: str,
        user_id: str,
        department_id: str,
        days: Sequence[DayTotals],
        settings: VolumeSpikeSettings,
    ) -> None:
        """Restore a user's recent days (e.g. from stored daily totals after a restart)."""
        ordered = sorted(d for d in days if d[1] > 0)
        if not ordered:
            return
        last_day, last_count, last_cost = ordered[-1]
        state = UserActivity(
            department_id,
            last_day,
            last_count,
            last_cost,
            deque(ordered[:-1], maxlen=settings.history_days),
        )
        self._users.put((organization_id, user_id), state)

    def __len__(self) -> int:
        return len(self._users)


def _roll(state: UserActivity, day: int, settings: VolumeSpikeSettings) -> None:
    if state.count:
        state.history.append((state.day, state.count, state.cost))
    if state.history.maxlen != settings.history_days:
        state.history = deque(state.history, maxlen=settings.history_days)
    state.day, state.count, state.cost = day, 0, ZERO
    if len(state.history) < settings.warmup_days:
        state.count_limit = state.cost_limit = None
        return
    state.count_limit = robust_limit(
        [float(count) for _, count, _ in state.history],
        settings.factor,
        settings.mad_multiplier,
        float(settings.min_requests),
    )
    costs = [cost for _, _, cost in state.history]
    if any(costs):
        state.cost_limit = robust_limit_decimal(
            costs,
            _decimal(settings.factor),
            _decimal(settings.mad_multiplier),
            settings.min_cost_krw,
        )
    else:  # seat-included use costs nothing per request: the floor is the whole limit
        state.cost_limit = Limit(settings.min_cost_krw, ZERO, ZERO)


@functools.lru_cache(maxsize=64)
def _decimal(value: float) -> Decimal:
    return Decimal(str(value))


def _limit_values(limit: Limit[float] | Limit[Decimal] | None) -> list[str] | None:
    if limit is None:
        return None
    return [str(limit.limit), str(limit.median), str(limit.mad)]


def _set_day(state: UserActivity, day: int, count: int, cost: Decimal) -> None:
    days = {d: (c, s) for d, c, s in state.history}
    days[day] = (count, cost)
    ordered = sorted((d, c, s) for d, (c, s) in days.items())
    state.history = deque(ordered, maxlen=state.history.maxlen)


def _add_late(state: UserActivity, day: int, cost: Decimal) -> None:
    days = {d: (count, spent) for d, count, spent in state.history}
    count, spent = days.get(day, (0, ZERO))
    days[day] = (count + 1, spent + cost)
    ordered = sorted((d, c, s) for d, (c, s) in days.items())
    state.history = deque(ordered, maxlen=state.history.maxlen)
