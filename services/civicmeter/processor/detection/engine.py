"""The detection engine: every detector over each micro-batch, with bounded state.

Pure and Kafka-free: the processor hands it validated events with their rated cost and
publishes what it returns. Given the same events in the same order it returns the same
alerts. An event id seen recently is skipped (at-least-once redelivery never counts twice),
and a dedup key raised recently is not raised again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from civicmeter.core.policy import DETECTOR_NAMES, OrganizationPolicy, PolicySet
from civicmeter.processor.detection.activity import ActivityTracker, DayTotals
from civicmeter.processor.detection.alert import Alert
from civicmeter.processor.detection.bounded import RecentSet
from civicmeter.processor.detection.context import EventContext
from civicmeter.processor.detection.detectors.automation_burst import AutomationBurstDetector
from civicmeter.processor.detection.detectors.banned_provider import BannedProviderDetector
from civicmeter.processor.detection.detectors.base import Detector
from civicmeter.processor.detection.detectors.new_service_in_department import (
    NewServiceInDepartmentDetector,
)
from civicmeter.processor.detection.detectors.non_work_content import NonWorkContentDetector
from civicmeter.processor.detection.detectors.off_hours import OffHoursDetector
from civicmeter.processor.detection.detectors.peer_spike import PeerSpikeDetector
from civicmeter.processor.detection.detectors.personal_account import PersonalAccountDetector
from civicmeter.processor.detection.detectors.pii_sent import PiiSentDetector
from civicmeter.processor.detection.detectors.repeated_denials import RepeatedDenialsDetector
from civicmeter.processor.detection.detectors.unsanctioned_service import (
    UnsanctionedServiceDetector,
)
from civicmeter.processor.detection.detectors.volume_spike import VolumeSpikeDetector
from civicmeter.usage.v1 import usage_event_pb2 as pb


@dataclass(frozen=True)
class EngineLimits:
    """Caps on the engine's memory; past a cap the least recently used entry goes."""

    seen_events: int = 200_000  # event ids remembered to skip redeliveries
    raised_alerts: int = 200_000  # dedup keys remembered to raise each once
    users: int = 200_000  # per-user baselines and burst windows
    departments: int = 20_000  # peer statistics and services seen, per department
    department_members: int = 5_000  # members remembered per department for peer statistics
    organizations: int = 10_000  # per-organisation policy lookups


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_OFFSET_BUCKET = 900  # time-zone offsets change only on quarter hours (UTC)
_CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class _Organization:
    policy: OrganizationPolicy
    enabled: tuple[Detector, ...]
    offsets: dict[int, int]  # quarter hour (epoch / 900) -> UTC offset in seconds
    months: dict[int, int]  # local date ordinal -> year * 100 + month

    def local(self, seconds: int) -> tuple[int, int, int]:
        """(local date ordinal, second of the day, year * 100 + month) of an epoch second."""
        bucket = seconds // _OFFSET_BUCKET
        offset = self.offsets.get(bucket)
        if offset is None:
            zone = self.policy.working_time.time_zone
            delta = datetime.fromtimestamp(bucket * _OFFSET_BUCKET, zone).utcoffset()
            offset = int(delta.total_seconds()) if delta else 0
            if len(self.offsets) > _CACHE_LIMIT:
                self.offsets.clear()
            self.offsets[bucket] = offset
        day, second = divmod(seconds + offset, 86_400)
        day += _EPOCH_ORDINAL
        month = self.months.get(day)
        if month is None:
            when = date.fromordinal(day)
            month = when.year * 100 + when.month
            if len(self.months) > _CACHE_LIMIT:
                self.months.clear()
            self.months[day] = month
        return day, second, month


class DetectionEngine:
    def __init__(
        self,
        policies: PolicySet,
        limits: EngineLimits | None = None,
        detectors: Collection[str] | None = None,
        *,
        fold_repeats: bool = True,
    ) -> None:
        """`detectors`: the names of those to run (default all), e.g. to run the
        organisation-wide ones (peer_spike, new_service_in_department) where all of an
        organisation's events arrive, and the rest where one user's do.

        `fold_repeats`: raise each dedup key once while remembered (True), or return every
        occurrence (False) for a store that folds them into one alert with a count."""
        unknown = set(detectors or ()) - set(DETECTOR_NAMES)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {DETECTOR_NAMES}")
        self.limits = limits or EngineLimits()
        self._only = frozenset(DETECTOR_NAMES if detectors is None else detectors)
        self._policies = policies
        self._seen: RecentSet[str] = RecentSet(self.limits.seen_events)
        self._raised: RecentSet[str] = RecentSet(self.limits.raised_alerts)
        self._fold = fold_repeats
        self._organizations: dict[str, _Organization] = {}
        self._activity = ActivityTracker(self.limits.users)
        self._bursts = AutomationBurstDetector(self.limits.users)
        self._peers = PeerSpikeDetector(
            self._activity, self.limits.departments, self.limits.department_members
        )
        self._new_services = NewServiceInDepartmentDetector(self.limits.departments)
        # The order alerts of one event come out in: service-level findings first.
        self._detectors: tuple[Detector, ...] = (
            BannedProviderDetector(),
            UnsanctionedServiceDetector(),
            PersonalAccountDetector(),
            PiiSentDetector(),
            NonWorkContentDetector(),
            OffHoursDetector(),
            self._bursts,
            VolumeSpikeDetector(),
            self._peers,
            self._new_services,
            RepeatedDenialsDetector(self.limits.users),
        )
        self.repeats = 0  # redelivered events skipped

    @property
    def policies(self) -> PolicySet:
        return self._policies

    def replace_policies(self, policies: PolicySet) -> None:
        """Use a new policy version from now on, keeping baselines and seen ids."""
        self._policies = policies
        self._organizations = {}

    def process(self, batch: Sequence[tuple[pb.UsageEvent, Decimal]]) -> list[Alert]:
        """The alerts this batch raises, in event order (each dedup key once when folding)."""
        alerts: list[Alert] = []
        seen, raised = self._seen, self._raised
        version = self._policies.version
        for event, cost in batch:
            if not seen.add(event.event_id):
                self.repeats += 1
                continue
            organization_id = event.organization_id
            org = self._organization(organization_id)
            policy = org.policy
            stamp = event.event_time
            day, second, month = org.local(stamp.seconds)
            activity = event.operation_name != "subscription" and not event.usage.seat_months
            provider, service = event.provider_name, event.service_id
            ctx = EventContext(
                event=event,
                organization_id=organization_id,
                department_id=event.department_id,
                user_id=event.user_id,
                service_id=service,
                provider_name=provider,
                risk=event.risk if event.HasField("risk") else None,
                cost=cost,
                policy=policy,
                policy_version=version,
                seconds=stamp.seconds + stamp.nanos / 1e9,
                day=day,
                second=second,
                month=month,
                activity=activity,
                banned=policy.is_banned(provider, service),
                sanctioned=service in policy.sanctioned_services,
            )
            if activity:
                ctx.today = self._activity.observe(ctx)
            for detector in org.enabled:
                for alert in detector.detect(ctx):
                    if not self._fold or raised.add(alert.dedup_key):
                        alerts.append(alert)
        return alerts

    def seed_user_days(
        self,
        organization_id: str,
        department_id: str,
        user_id: str,
        days: Sequence[tuple[date, int, Decimal]],
    ) -> None:
        """A user's requests and cost per local day (most recent last), e.g. from stored
        daily totals at start-up, so their baseline needs no new warm-up."""
        policy = self._organization(organization_id).policy
        totals: list[DayTotals] = [(day.toordinal(), count, cost) for day, count, cost in days]
        self._activity.seed(
            organization_id, user_id, department_id, totals, policy.detectors.volume_spike
        )

    def state_sizes(self) -> dict[str, int]:
        """Entries held per kind of state (each is capped by EngineLimits)."""
        return {
            "seen_events": len(self._seen),
            "raised_alerts": len(self._raised),
            "users": len(self._activity),
            "burst_windows": len(self._bursts),
            "departments": len(self._peers),
            "department_services": len(self._new_services),
            "organizations": len(self._organizations),
        }

    def _organization(self, organization_id: str) -> _Organization:
        org = self._organizations.get(organization_id)
        if org is None:
            policy = self._policies.for_organization(organization_id)
            enabled = tuple(
                d
                for d in self._detectors
                if d.name in self._only and getattr(policy.detectors, d.name).enabled
            )
            org = _Organization(policy, enabled, {}, {})
            if len(self._organizations) >= self.limits.organizations:
                del self._organizations[next(iter(self._organizations))]  # the oldest
            self._organizations[organization_id] = org
        return org
