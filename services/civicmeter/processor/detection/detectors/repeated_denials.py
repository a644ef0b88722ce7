"""A user whose requests the gateway guard keeps denying: someone trying to get around the
policy (a banned provider, a blocked document, a spent budget) rather than a one-off mistake.

Fires when at least `min_denials` of a user's requests within `window_seconds` were denied
(decision DENY); once a day per user.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


@dataclass(slots=True)
class _Denials:
    times: deque[float]
    alerted_day: int = 0


class RepeatedDenialsDetector:
    name = "repeated_denials"

    def __init__(self, users: int) -> None:
        self._users: LruMap[tuple[str, str], _Denials] = LruMap(users)

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        event = ctx.event
        if event.decision != pb.DECISION_DENY:
            return NO_ALERTS
        settings = ctx.policy.detectors.repeated_denials
        key = (ctx.organization_id, ctx.user_id)
        denials = self._users.get(key)
        if denials is None or denials.times.maxlen != settings.min_denials:
            denials = _Denials(deque(denials.times if denials else (), settings.min_denials))
            self._users.put(key, denials)
        denials.times.append(ctx.seconds)
        times = denials.times
        if (
            denials.alerted_day == ctx.day
            or len(times) < settings.min_denials
            or max(times) - min(times) > settings.window_seconds
        ):
            return NO_ALERTS
        denials.alerted_day = ctx.day
        rules = ", ".join(event.decision_rule_ids) or "unknown"
        minutes = settings.window_seconds / 60
        return (
            ctx.alert(
                self.name,
                settings.severity,
                (ctx.user_id, ctx.day_label),
                f"{ctx.who} had {len(times)} requests denied within {minutes:g} minutes "
                f"(last at {ctx.when}, rules: {rules}).",
                f"{ctx.who_ko}의 요청이 {minutes:g}분 안에 {len(times)}번 차단되었습니다"
                f"(마지막 {ctx.when}, 규칙: {rules}).",
                {"denials": str(len(times)), "rule_ids": rules},
            ),
        )

    def export(self, key: tuple[str, str]) -> list[Any] | None:
        """A user's recent denial times and alerted day, as plain values; None when unknown."""
        denials = self._users.peek(key)
        if denials is None:
            return None
        return [list(denials.times), denials.times.maxlen, denials.alerted_day]

    def restore(self, key: tuple[str, str], values: Sequence[Any]) -> None:
        times, maxlen, alerted_day = values
        self._users.put(key, _Denials(deque(times, maxlen=maxlen), alerted_day))
