"""A user's day far above what the peers in their department typically do.

Once a day per department, each member with `peer_warmup_days` completed active days gives
their median requests per day; the department's limit is the robust limit of those medians
(robust.py), set when there are `min_peers` of them. A user's day above it raises an alert
when the user has no baseline of their own yet (new staff) or their own typical day is itself
above it (a standing outlier); a jump against a normal baseline of one's own is left to
volume_spike, so a busy day of a busy but ordinary user is not flagged twice. Raised once per
user and month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from civicmeter.processor.detection.activity import ActivityTracker
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import LruMap
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS
from civicmeter.processor.detection.robust import Limit, robust_limit


@dataclass(slots=True)
class Department:
    members: dict[str, None]  # user ids, oldest first; capped, the oldest leave first
    day: int = 0
    limit: Limit[float] | None = None
    peers: int = 0


class PeerSpikeDetector:
    name = "peer_spike"

    def __init__(self, activity: ActivityTracker, departments: int, members: int) -> None:
        self._activity = activity
        self._departments: LruMap[tuple[str, str], Department] = LruMap(departments)
        self._members = members

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        state = ctx.today
        if state is None:
            return NO_ALERTS
        department = self.joined((ctx.organization_id, ctx.department_id), ctx.user_id)
        if ctx.day > department.day:
            self._refresh(ctx, department)
        limit = department.limit
        if limit is None or state.count <= limit.limit or state.peer_alerted_month == ctx.month:
            return NO_ALERTS
        own = state.count_limit
        if own is not None and own.median <= limit.limit:
            return NO_ALERTS  # an ordinary baseline: a jump against it is a volume spike
        state.peer_alerted_month = ctx.month
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.peer_spike.severity,
                (ctx.department_id, ctx.user_id, ctx.month_label),
                f"{ctx.who} made {state.count} requests on {ctx.day_label}, while the "
                f"{department.peers} peers in {ctx.organization_id}/{ctx.department_id} "
                f"typically make {limit.median:g} a day (limit {limit.limit:.0f}).",
                f"{ctx.who_ko}이(가) {ctx.day_label}에 {state.count}건을 요청했습니다. 같은 부서 "
                f"{department.peers}명은 보통 하루 {limit.median:g}건(한도 {limit.limit:.0f}건).",
                {
                    "metric": "requests",
                    "observed": str(state.count),
                    "limit": f"{limit.limit:.1f}",
                    "peer_median": f"{limit.median:g}",
                    "peer_mad": f"{limit.mad:g}",
                    "peers": str(department.peers),
                },
            ),
        )

    def _refresh(self, ctx: EventContext, department: Department) -> None:
        settings = ctx.policy.detectors.peer_spike
        org, dept = ctx.organization_id, ctx.department_id
        typical: list[float] = []
        for member in department.members:
            activity = self._activity.peek(org, member)
            if activity is None or activity.department != dept:
                continue
            value = activity.typical_count(ctx.day, settings.peer_warmup_days)
            if value is not None:
                typical.append(value)
        department.day = ctx.day
        department.peers = len(typical)
        department.limit = (
            robust_limit(typical, settings.factor, settings.mad_multiplier, settings.min_requests)
            if len(typical) >= settings.min_peers
            else None
        )

    def joined(self, key: tuple[str, str], user_id: str) -> Department:
        """The department (marked as just used) with the user among its members."""
        department = self._department(key)
        self._join(department, user_id)
        return department

    def touch(self, key: tuple[str, str]) -> None:
        """Mark a department as just used."""
        self._departments.get(key)

    def _join(self, department: Department, user_id: str) -> None:
        members = department.members
        if user_id not in members:
            members[user_id] = None
            if len(members) > self._members:
                del members[next(iter(members))]

    def _department(self, key: tuple[str, str]) -> Department:
        department = self._departments.get(key)
        if department is None:
            department = Department({})
            self._departments.put(key, department)
        return department

    def export(self, key: tuple[str, str]) -> list[Any] | None:
        """A department's day, limit and peers as plain values; None when unknown. Members
        are not kept: each restored user joins their department again (restore_member)."""
        department = self._departments.peek(key)
        if department is None:
            return None
        limit = department.limit
        values = None if limit is None else [limit.limit, limit.median, limit.mad]
        return [department.day, values, department.peers]

    def restore(self, key: tuple[str, str], values: Sequence[Any]) -> None:
        day, limit, peers = values
        department = self._department(key)
        department.day = day
        department.limit = None if limit is None else Limit(*limit)
        department.peers = peers

    def restore_member(self, organization_id: str, department_id: str, user_id: str) -> None:
        self._join(self._department((organization_id, department_id)), user_id)

    def __len__(self) -> int:
        return len(self._departments)

    def __contains__(self, key: object) -> bool:
        return key in self._departments
