"""Use of a service the organisation has not sanctioned (a banned one is reported as banned)."""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


class UnsanctionedServiceDetector:
    name = "unsanctioned_service"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if ctx.sanctioned or ctx.banned:
            return NO_ALERTS
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.unsanctioned_service.severity,
                (ctx.user_id, ctx.service_id, ctx.day_label),
                f"{ctx.who} used {ctx.service_id} from {ctx.provider_name}, which is not "
                f"sanctioned for {ctx.organization_id}, at {ctx.when}.",
                f"{ctx.who_ko}이(가) {ctx.when}에 {ctx.organization_id}에서 승인되지 않은 "
                f"{ctx.service_id}({ctx.provider_name})을(를) 사용했습니다.",
            ),
        )
