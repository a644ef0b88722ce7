"""Use through an account kind the policy does not allow (personal accounts, by default)."""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS


class PersonalAccountDetector:
    name = "personal_account"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        event = ctx.event
        if ctx.policy.allows_account_kind(event.account_kind):
            return NO_ALERTS
        kind = pb.AccountKind.Name(event.account_kind).removeprefix("ACCOUNT_KIND_").lower()
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.personal_account.severity,
                (ctx.user_id, ctx.service_id, ctx.day_label),
                f"{ctx.who} used {ctx.service_id} with a {kind} account, which "
                f"{ctx.organization_id} does not allow, at {ctx.when}.",
                f"{ctx.who_ko}이(가) {ctx.when}에 허용되지 않은 {kind} 계정으로 "
                f"{ctx.service_id}을(를) 사용했습니다.",
                {"account_kind": kind},
            ),
        )
