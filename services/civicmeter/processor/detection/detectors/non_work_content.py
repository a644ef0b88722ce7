"""Requests the gateway put in a content category the policy lists as non-work."""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


class NonWorkContentDetector:
    name = "non_work_content"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if ctx.risk is None:
            return NO_ALERTS
        category = ctx.risk.content_category
        if not ctx.policy.non_work_categories.matches(category):
            return NO_ALERTS
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.non_work_content.severity,
                (ctx.user_id, category, ctx.day_label),
                f"{ctx.who} used {ctx.service_id} for content in the non-work category "
                f"{category} at {ctx.when}.",
                f"{ctx.who_ko}이(가) {ctx.when}에 업무 외 범주({category})로 "
                f"{ctx.service_id}을(를) 사용했습니다.",
                {"content_category": category},
            ),
        )
