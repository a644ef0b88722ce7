"""Use outside the person's working time: after hours, on a day off or a public holiday.

Working time is the organisation's office hours with their grace, or any schedule of the
person's department or of the person (remote work, overtime, shifts); see policy.working_time.
"""

from __future__ import annotations

from collections.abc import Sequence

from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.base import NO_ALERTS

_REASONS: dict[str, tuple[str, str]] = {
    "after_hours": ("outside working hours", "근무시간 외"),
    "weekend": ("on a day off", "휴무일"),
}


class OffHoursDetector:
    name = "off_hours"

    def detect(self, ctx: EventContext) -> Sequence[Alert]:
        if not ctx.activity:
            return NO_ALERTS
        status = ctx.policy.working_time.off_hours(ctx.local, ctx.department_id, ctx.user_id)
        if status is None:
            return NO_ALERTS
        if status.reason == "holiday":
            why = f"on a public holiday ({status.holiday})"
            why_ko = f"공휴일({status.holiday_ko or status.holiday})"
        else:
            why, why_ko = _REASONS[status.reason]
        attributes: dict[str, str] = {"reason": status.reason}
        if status.holiday:
            attributes["holiday"] = status.holiday
        return (
            ctx.alert(
                self.name,
                ctx.policy.detectors.off_hours.severity,
                (ctx.user_id, ctx.day_label),
                f"{ctx.who} used {ctx.service_id} at {ctx.when}, {why}, and no remote-work "
                "or overtime schedule covers it.",
                f"{ctx.who_ko}이(가) {why_ko}인 {ctx.when}에 {ctx.service_id}을(를) "
                "사용했습니다 (해당 원격근무·초과근무 일정 없음).",
                attributes,
            ),
        )
