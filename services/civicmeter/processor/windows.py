"""One-minute cost windows per organisation, department, user and service.

Aggregated in a plain dict per micro-batch and flushed as window deltas: a consumer of
usage.cost.1m sums the deltas of a window to get its running total.
"""

from __future__ import annotations

from decimal import Decimal

from civicmeter.usage.v1 import usage_event_pb2 as pb

WindowKey = tuple[int, str, str, str, str]  # (minute start epoch s, org, dept, user, service)


class MinuteWindows:
    def __init__(self) -> None:
        self._windows: dict[WindowKey, list[int | Decimal]] = {}

    def add(self, event: pb.UsageEvent, cost: Decimal) -> None:
        seconds = event.event_time.seconds
        key = (
            seconds - seconds % 60,
            event.organization_id,
            event.department_id,
            event.user_id,
            event.service_id,
        )
        slot = self._windows.get(key)
        if slot is None:
            self._windows[key] = [1, cost]
        else:
            slot[0] += 1
            slot[1] += cost

    def __len__(self) -> int:
        return len(self._windows)

    def drain(self) -> list[pb.CostWindow]:
        """The window deltas gathered so far, emptying the aggregator."""
        out: list[pb.CostWindow] = []
        for (start, org, dept, user, service), (events, cost) in self._windows.items():
            window = pb.CostWindow(
                organization_id=org,
                department_id=dept,
                user_id=user,
                service_id=service,
                events=int(events),
                cost_krw=str(cost),
            )
            window.window_start_time.seconds = start
            out.append(window)
        self._windows.clear()
        return out
