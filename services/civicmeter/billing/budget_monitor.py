"""Budget alerts over the stored ledger: budget_threshold and budget_forecast.

Every round (BillingSettings.interval_seconds) the monitor takes the policy in force, reads the
status of every budget in the current Asia/Seoul month and fiscal year from the rollups
(core.budgets: seat charges and re-rating included) and raises

- budget_threshold, once per budget, period and threshold, with the threshold's severity;
  dedup key `budget_threshold|{organisation}|{department, * for the organisation}|{period}|
  {percent}`, the period being `2026-11` for a month and `2026` for a fiscal year;
- budget_forecast, once per budget and period, when the run-rate projects an overrun of at
  least `min_overrun_percent` of the budget while it is not spent yet; dedup key
  `budget_forecast|{organisation}|{department or *}|{period}`.

Keys are joined with `|`, as every dedup key is (identifiers may hold `:`, never `|`), and a
monthly threshold's key is the one the stream's detector used, so a threshold it raised before
budgets moved here is not raised again. Alerts go where the processor's go: to usage.alerts,
from which the sink stores them (alert_occurrences and alerts_opened), so ListAlerts,
WatchAlerts and the notifier deliver them unchanged. An alert is produced only while its key is
neither in alerts_opened nor produced by this process before: it is raised once whatever the
number of rounds and restarts (one produced again after a restart, before the sink stored it,
is opened once by the sink all the same), and the occurrences table does not grow each round.
For the first day of a
period, the one that just ended is checked again (thresholds only), so late events and re-rating
that land after its end still raise its thresholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.severity import SEVERITY_VALUES, Severity
from civicmeter.billing.publisher import Publisher
from civicmeter.core.budgets import (
    ORGANIZATION,
    BudgetStatus,
    Ledger,
    ThresholdStatus,
    lookback_days,
    status,
    statuses,
)
from civicmeter.core.config import BillingSettings
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.store.alerts import opened_keys
from civicmeter.core.store.budgets import load_ledger
from civicmeter.core.store.connection import Storage
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.policy.organization import PolicySet

log = logging.getLogger("civicmeter.billing.budgets")
SETTLING = timedelta(days=1)  # how long after its end a period's thresholds are checked again
# English month names, whatever the process's locale (strftime's %B follows it).
_MONTHS = "January February March April May June July August September October November December"


@dataclass(frozen=True)
class RoundResult:
    statuses: list[BudgetStatus]  # the budgets evaluated
    raised: list[alert_pb2.Alert]  # the alerts opened


class BudgetMonitor:
    def __init__(
        self,
        storage: Storage,
        publisher: Publisher,
        policies: Callable[[], PolicySet],
        interval_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        telemetry: Telemetry | None = None,
    ) -> None:
        """`policies` gives the policy in force each round (reloaded as the file changes)."""
        self._storage = storage
        self._publisher = publisher
        # Keys produced and acknowledged: not produced again while the sink catches up.
        self._produced: set[tuple[str, str]] = set()
        self._policies = policies
        self._interval = interval_seconds
        self._clock = clock
        self._raised = (
            telemetry.meter.create_counter(
                "civicmeter.billing.budget_alerts",
                unit="{alert}",
                description="Budget alerts opened, by type",
            )
            if telemetry is not None
            else None
        )

    @classmethod
    def from_settings(
        cls,
        settings: BillingSettings,
        storage: Storage,
        publisher: Publisher,
        telemetry: Telemetry,
    ) -> BudgetMonitor:
        """A bad policy file stops start-up (PolicyError); later ones keep the last good."""
        policies = PolicySource(settings.policy_file)
        return cls(
            storage, publisher, policies.current, settings.interval_seconds, telemetry=telemetry
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await self.round()
            except Exception:  # a failed round (e.g. ClickHouse away) is retried, never fatal
                log.exception("budget round failed; next try in %gs", self._interval)
            else:
                for alert in result.raised:
                    log.info("budget alert %s: %s", alert.dedup_key, alert.explanation)
                    if self._raised is not None:
                        self._raised.add(1, {"alert_type": alert.alert_type})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

    async def round(self) -> RoundResult:
        """Evaluate every budget now and open the alerts not opened before."""
        now = self._clock()
        policies = self._policies()
        days = lookback_days(policies)
        ledger = await self._storage.run(lambda client: load_ledger(client, now, None, days))
        evaluated, alerts = budget_alerts(ledger, policies)
        new = [a for a in alerts if (a.organization_id, a.dedup_key) not in self._produced]
        if new:
            opened = await self._storage.run(lambda client: opened_keys(client, new))
            new = [a for a in new if (a.organization_id, a.dedup_key) not in opened]
        await self._publisher.alerts(new)
        self._produced.update((a.organization_id, a.dedup_key) for a in new)
        return RoundResult(evaluated, new)


def budget_alerts(
    ledger: Ledger, policies: PolicySet
) -> tuple[list[BudgetStatus], list[alert_pb2.Alert]]:
    """Every budget's status now (and, while it settles, in the period just ended), and an
    alert for each threshold crossed and each projected overrun the policy alerts on."""
    evaluated: list[BudgetStatus] = []
    alerts: list[alert_pb2.Alert] = []
    for current in statuses(ledger, policies):
        policy = policies.for_organization(current.budget.organization_id)
        found = [current]
        if ledger.as_of - current.period.start_time < SETTLING:
            found.insert(0, status(ledger, current.budget, current.period.previous))
        evaluated += found
        if policy.detectors.budget_threshold.enabled:
            alerts += [
                _threshold_alert(s, t, policies.version, ledger.as_of)
                for s in found
                for t in s.crossed
            ]
        settings = policy.detectors.budget_forecast
        forecast = current.forecast
        amount = current.budget.amount
        if (
            settings.enabled
            and forecast is not None
            and current.spent < amount
            and forecast.projected_overrun > 0
            and forecast.projected_overrun * 100 >= amount * settings.min_overrun_percent
        ):
            alerts.append(
                _forecast_alert(current, settings.severity, policies.version, ledger.as_of)
            )
    return evaluated, alerts


# --- the alerts ----------------------------------------------------------------------------------


def _threshold_alert(
    s: BudgetStatus, threshold: ThresholdStatus, version: str, now: datetime
) -> alert_pb2.Alert:
    budget = s.budget
    english = (
        f"{_who(s)} has spent {_krw(s.spent)} KRW of its {_krw(budget.amount)} KRW budget "
        f"for {_period(s)} ({int(s.percent)}%), past its {threshold.percent}% threshold."
    )
    korean = (
        f"{_who_ko(s)}의 {_period_ko(s)} 사용액이 예산 {_krw(budget.amount)}원 중 "
        f"{_krw(s.spent)}원({int(s.percent)}%)으로 {threshold.percent}% 기준을 넘었습니다."
    )
    return _alert(
        s,
        "budget_threshold",
        (str(threshold.percent),),
        threshold.severity,
        english,
        korean,
        {"threshold_percent": str(threshold.percent)},
        version,
        now,
    )


def _forecast_alert(
    s: BudgetStatus, severity: Severity, version: str, now: datetime
) -> alert_pb2.Alert:
    forecast = s.forecast
    assert forecast is not None
    amount = s.budget.amount
    over = int(forecast.projected_overrun * 100 / amount)
    days = forecast.run_rate_days
    basis = (
        f"metered use at {_krw(forecast.daily_run_rate)} KRW a day (the last {days} "
        f"day{'s' if days != 1 else ''})"
        if days
        else "no metered use stored yet"
    )
    basis_ko = (
        f"최근 {days}일 사용량 하루 {_krw(forecast.daily_run_rate)}원"
        if days
        else "저장된 사용량 없음"
    )
    if forecast.recurring_charges:
        basis += f", and {_krw(forecast.recurring_charges)} KRW of seat charges to come"
        basis_ko += f", 예정된 구독료 {_krw(forecast.recurring_charges)}원"
    runs_out = f", which runs out around {forecast.exhaustion_date}"
    runs_out_ko = f" 예산 소진 예상일은 {forecast.exhaustion_date}입니다."
    english = (
        f"{_who(s)} is projected to spend {_krw(forecast.projected_spend)} KRW in {_period(s)}, "
        f"{_krw(forecast.projected_overrun)} KRW ({over}%) over its {_krw(amount)} KRW "
        f"budget{runs_out if forecast.exhaustion_date else ''}: {basis}. "
        f"Spent so far: {_krw(s.spent)} KRW ({int(s.percent)}%)."
    )
    korean = (
        f"{_who_ko(s)}의 {_period_ko(s)} 사용액은 {_krw(forecast.projected_spend)}원으로 예상되어 "
        f"예산 {_krw(amount)}원을 {_krw(forecast.projected_overrun)}원({over}%) 초과합니다."
        f"{runs_out_ko if forecast.exhaustion_date else ''} 근거: {basis_ko}. "
        f"현재 사용액: {_krw(s.spent)}원({int(s.percent)}%)."
    )
    return _alert(
        s,
        "budget_forecast",
        (),
        severity,
        english,
        korean,
        {
            "projected_spend_krw": str(forecast.projected_spend),
            "projected_overrun_krw": str(forecast.projected_overrun),
            "exhaustion_date": str(forecast.exhaustion_date or ""),
            "daily_run_rate_krw": str(forecast.daily_run_rate),
            "run_rate_days": str(days),
            "recurring_charges_krw": str(forecast.recurring_charges),
        },
        version,
        now,
    )


def _alert(
    s: BudgetStatus,
    alert_type: str,
    key_tail: tuple[str, ...],
    severity: Severity,
    explanation: str,
    explanation_ko: str,
    attributes: dict[str, str],
    version: str,
    now: datetime,
) -> alert_pb2.Alert:
    budget = s.budget
    department = budget.department_id
    key = (alert_type, budget.organization_id, department or "*", s.period.label, *key_tail)
    record = alert_pb2.Alert(
        dedup_key="|".join(key),
        alert_type=alert_type,
        severity=SEVERITY_VALUES[severity],
        state=alert_pb2.ALERT_STATE_OPEN,
        organization_id=budget.organization_id,
        department_id=department,
        occurrence_count=1,
        explanation=explanation,
        attributes={
            "scope": "department" if department != ORGANIZATION else "organization",
            "period": s.period.label,
            "period_kind": "month" if s.period.kind == "month" else "fiscal_year",
            "budget_krw": str(budget.amount),
            "spent_krw": str(s.spent),
            "percent_spent": str(s.percent),
            "spent_through": s.through.isoformat(),
            "policy_version": version,
            "explanation_ko": explanation_ko,
            **attributes,
        },
    )
    record.first_seen_time.FromDatetime(now)
    record.last_seen_time.CopyFrom(record.first_seen_time)
    return record


def _who(s: BudgetStatus) -> str:
    org, department = s.budget.organization_id, s.budget.department_id
    return f"Department {department} ({org})" if department else f"Organisation {org}"


def _who_ko(s: BudgetStatus) -> str:
    org, department = s.budget.organization_id, s.budget.department_id
    return f"{org} 기관 {department} 부서" if department else f"{org} 기관"


def _period(s: BudgetStatus) -> str:
    start = s.period.start
    if s.period.kind == "month":
        return f"{_MONTHS.split()[start.month - 1]} {start.year}"
    return f"fiscal year {start.year}"


def _period_ko(s: BudgetStatus) -> str:
    start = s.period.start
    if s.period.kind == "month":
        return f"{start.year}년 {start.month}월"
    return f"{start.year} 회계연도"


def _krw(amount: Decimal) -> str:
    """Whole won with thousands separators (amounts keep their fractions in attributes)."""
    return f"{amount:,.0f}"
