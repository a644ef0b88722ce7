"""The first use of a sanctioned service in a department, once the department is known.

For `warmup_days` after a department's first request its services are learned silently;
after that a service it has never used raises one low-severity alert. Unsanctioned and banned
services are not counted here: they raise their own, stronger alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


@dataclass(slots=True)
class Seen:
    first_seconds: float
    services: set[str] = field(default_factory=set)  # sanctioned ones only, so bounded


class NewServiceInDepartmentDetector:
    name = "new_service_in_department"

    def __init__(self, departments: int) -> None:
        self._departments: LruMap[tuple[str, str], Seen] = LruMap(departments)

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if not ctx.activity or not ctx.sanctioned or ctx.banned:
            return NO_ALERTS
        key = (ctx.organization_id, ctx.department_id)
        seen = self._departments.get(key)
        if seen is None:
            self._departments.put(key, Seen(ctx.seconds, {ctx.service_id}))
            return NO_ALERTS
        seen.first_seconds = min(seen.first_seconds, ctx.seconds)
        if ctx.service_id in seen.services:
            return NO_ALERTS
        seen.services.add(ctx.service_id)
        settings = ctx.policy.detectors.new_service_in_department
        known_days = (ctx.seconds - seen.first_seconds) / 86_400
        if known_days < settings.warmup_days:
            return NO_ALERTS
        return (
            ctx.alert(
                self.name,
                settings.severity,
                (ctx.department_id, ctx.service_id),
                f"Department {ctx.organization_id}/{ctx.department_id} used "
                f"{ctx.service_id} for the first time in {known_days:.0f} days of use "
                f"({ctx.who} at {ctx.when}).",
                f"{ctx.organization_id}/{ctx.department_id} 부서가 {ctx.service_id}을(를) "
                f"처음 사용했습니다 ({ctx.who_ko}, {ctx.when}).",
                {"known_days": f"{known_days:.1f}"},
            ),
        )

    def seen(self, key: tuple[str, str]) -> Seen | None:
        """A department's first request time and services, marked as just used."""
        return self._departments.get(key)

    def export(self, key: tuple[str, str]) -> list[Any] | None:
        """A department's first request time and services, as plain values; None if unknown."""
        seen = self._departments.peek(key)
        if seen is None:
            return None
        return [seen.first_seconds, sorted(seen.services)]

    def restore(self, key: tuple[str, str], values: Sequence[Any]) -> None:
        first_seconds, services = values
        self._departments.put(key, Seen(first_seconds, set(services)))

    def __len__(self) -> int:
        return len(self._departments)

    def __contains__(self, key: object) -> bool:
        return key in self._departments
