"""Use of a banned provider or service: DeepSeek for every government, and any the policy adds."""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.policy.organization import ALWAYS_BANNED_PROVIDERS
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


class BannedProviderDetector:
    name = "banned_provider"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if not ctx.banned:
            return NO_ALERTS
        policy = ctx.policy
        banned = (
            ctx.provider_name if ctx.provider_name in policy.banned_providers else ctx.service_id
        )
        if banned in ALWAYS_BANNED_PROVIDERS:
            scope, scope_ko = "banned for every government", "전 기관 사용 금지"
        elif banned in policy.globally_banned_providers:
            scope, scope_ko = "banned for every organisation", "전 기관 사용 금지"
        else:
            scope = f"banned by the policy of {ctx.organization_id}"
            scope_ko = f"{ctx.organization_id} 정책상 사용 금지"
        return (
            ctx.alert(
                self.name,
                policy.detectors.banned_provider.severity,
                (ctx.user_id, banned, ctx.day_label),
                f"{ctx.who} used {ctx.service_id} from {ctx.provider_name} "
                f"({banned} is {scope}) at {ctx.when}.",
                f"{ctx.who_ko}이(가) {ctx.when}에 {ctx.provider_name}의 {ctx.service_id}을(를) "
                f"사용했습니다 ({banned}: {scope_ko}).",
                {"banned": banned, "scope": "global" if "every" in scope else "organization"},
            ),
        )
