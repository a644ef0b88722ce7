"""What every detector needs to know about one event, worked out once by the engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from civicmeter.api.severity import Severity
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.policy.organization import OrganizationPolicy
from civicmeter.processor.detection.alert import (
    Alert,
    day_label,
    dedup_key,
    minute_label,
    short_user,
)
from civicmeter.processor.detection.user_activity import UserActivity


@dataclass(slots=True)
class EventContext:
    event: pb.UsageEvent
    # The event's identifiers, read once (a protobuf field read costs more than an attribute).
    organization_id: str
    department_id: str
    user_id: str
    service_id: str
    provider_name: str
    risk: pb.RiskSignals | None  # None when the gateway sent no risk signals
    cost: Decimal  # rated cost in KRW
    policy: OrganizationPolicy
    policy_version: str
    seconds: float  # event time, epoch seconds
    day: int  # local date in the organisation's time zone, as date.toordinal()
    second: int  # local time of day, seconds after midnight
    month: int  # local year * 100 + month
    # A request a person made; False for a billing connector's seat-month charge, which is
    # spend (a ban still applies) but not activity (working hours, volume, bursts).
    activity: bool
    banned: bool  # the provider or service is banned for this organisation
    sanctioned: bool  # the service is sanctioned for this organisation
    # The user's totals for the event's day after counting it; None for a seat charge or a
    # late arrival for an earlier day.
    today: UserActivity | None = None
    _local: datetime | None = None

    @property
    def local(self) -> datetime:
        """The event time in the organisation's time zone (whole seconds)."""
        if self._local is None:
            zone = self.policy.working_time.time_zone
            self._local = datetime.fromtimestamp(int(self.seconds), zone)
        return self._local

    @property
    def day_label(self) -> str:
        return day_label(self.local)

    @property
    def month_label(self) -> str:
        return f"{self.local:%Y-%m}"

    @property
    def when(self) -> str:
        return minute_label(self.local)

    @property
    def who(self) -> str:
        return f"User {short_user(self.user_id)} ({self.organization_id}/{self.department_id})"

    @property
    def who_ko(self) -> str:
        return f"{self.organization_id}/{self.department_id} 사용자 {short_user(self.user_id)}"

    def alert(
        self,
        alert_type: str,
        severity: Severity,
        key: tuple[str, ...],
        explanation: str,
        explanation_ko: str,
        attributes: dict[str, str] | None = None,
        *,
        department_id: str | None = None,
        user_id: str | None = None,
        service_id: str | None = None,
        provider_name: str | None = None,
    ) -> Alert:
        """An alert raised by this event; the key parts follow the type and organisation."""
        event = self.event
        return Alert(
            alert_type=alert_type,
            severity=severity,
            organization_id=self.organization_id,
            department_id=self.department_id if department_id is None else department_id,
            user_id=self.user_id if user_id is None else user_id,
            service_id=self.service_id if service_id is None else service_id,
            provider_name=self.provider_name if provider_name is None else provider_name,
            event_id=event.event_id,
            event_time=datetime.fromtimestamp(self.seconds, UTC),
            dedup_key=dedup_key(alert_type, self.organization_id, *key),
            explanation=explanation,
            attributes={
                **(attributes or {}),
                "explanation_ko": explanation_ko,
                "local_time": self.local.isoformat(),
                "policy_version": self.policy_version,
            },
        )
