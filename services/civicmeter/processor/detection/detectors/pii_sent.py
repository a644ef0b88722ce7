"""Personal information sent to an AI service, by finding type, with the policy's severity."""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS

# What each finding type of the gateway's detector is, for the sentence.
DESCRIPTIONS = {
    "kr_rrn": ("resident registration number", "주민등록번호"),
    "kr_frn": ("foreigner registration number", "외국인등록번호"),
    "kr_passport": ("passport number", "여권번호"),
    "kr_driver_license": ("driver licence number", "운전면허번호"),
    "phone": ("phone number", "전화번호"),
    "email": ("e-mail address", "이메일 주소"),
    "bank_account": ("bank account number", "계좌번호"),
    "kr_brn": ("business registration number", "사업자등록번호"),
}


class PiiSentDetector:
    name = "pii_sent"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        risk = ctx.risk
        if risk is None or not risk.pii_findings:
            return NO_ALERTS
        settings = ctx.policy.detectors.pii_sent
        alerts: list[Alert] = []
        for kind, count in sorted(risk.pii_findings.items()):
            severity = settings.severity_of(kind)
            if severity is None or count <= 0:
                continue
            what, what_ko = DESCRIPTIONS.get(kind, (f"{kind} finding", kind))
            alerts.append(
                ctx.alert(
                    self.name,
                    severity,
                    (ctx.user_id, kind, ctx.day_label),
                    f"{ctx.who} sent {count} {what}(s) ({kind}) to {ctx.service_id} at {ctx.when}.",
                    f"{ctx.who_ko}이(가) {ctx.when}에 {ctx.service_id}에 {what_ko} {count}건을 "
                    "보냈습니다.",
                    {"pii_type": kind, "count": str(count)},
                )
            )
        return alerts
