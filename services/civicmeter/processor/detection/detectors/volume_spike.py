"""A user's day far above their own baseline, in requests or in cost.

The baseline is the user's last active days (activity.py); it fires once a day, on the request
that takes the day's running total past the limit, and only after the warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


class VolumeSpikeDetector:
    name = "volume_spike"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        state = ctx.today
        if state is None or state.volume_alerted_day == ctx.day:
            return NO_ALERTS
        count_limit, cost_limit = state.count_limit, state.cost_limit
        days = len(state.history)
        if count_limit is not None and state.count > count_limit.limit:
            attributes = {
                "metric": "requests",
                "observed": str(state.count),
                "limit": f"{count_limit.limit:.1f}",
                "baseline_median": f"{count_limit.median:g}",
                "baseline_mad": f"{count_limit.mad:g}",
                "baseline_days": str(days),
            }
            text = (
                f"{ctx.who} made {state.count} requests on {ctx.day_label}, against a usual "
                f"{count_limit.median:g} a day (median of their last {days} active days; "
                f"limit {count_limit.limit:.0f})."
            )
            text_ko = (
                f"{ctx.who_ko}이(가) {ctx.day_label}에 {state.count}건을 요청했습니다. 평소 하루 "
                f"{count_limit.median:g}건(최근 {days}일 중앙값, 한도 {count_limit.limit:.0f}건)."
            )
        elif cost_limit is not None and state.cost > cost_limit.limit:
            attributes = {
                "metric": "cost_krw",
                "observed": str(state.cost),
                "limit": str(cost_limit.limit),
                "baseline_median": str(cost_limit.median),
                "baseline_mad": str(cost_limit.mad),
                "baseline_days": str(days),
            }
            text = (
                f"{ctx.who} spent {state.cost:,.0f} KRW on {ctx.day_label}, against a usual "
                f"{cost_limit.median:,.0f} KRW a day (median of their last {days} active days; "
                f"limit {cost_limit.limit:,.0f} KRW)."
            )
            text_ko = (
                f"{ctx.who_ko}이(가) {ctx.day_label}에 {state.cost:,.0f}원을 사용했습니다. "
                f"평소 하루 {cost_limit.median:,.0f}원"
                f"(최근 {days}일 중앙값, 한도 {cost_limit.limit:,.0f}원)."
            )
        else:
            return NO_ALERTS
        state.volume_alerted_day = ctx.day
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.volume_spike.severity,
                (ctx.user_id, ctx.day_label),
                text,
                text_ko,
                attributes,
            ),
        )
