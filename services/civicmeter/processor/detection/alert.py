"""What a detector reports: an alert with a severity, a stable dedup key and an explanation.

Dedup keys are `|`-joined (a character no identifier may hold) and name only the alert type,
organisation, department, the pseudonymous user id, service, provider, finding type or
category, and the period, in the organisation's time zone:

| alert type | dedup key |
|---|---|
| banned_provider | type, org, user, banned provider (or service), day |
| unsanctioned_service, personal_account | type, org, user, service, day |
| pii_sent | type, org, user, finding type, day |
| non_work_content | type, org, user, content category, day |
| off_hours, volume_spike, automation_burst | type, org, user, day |
| peer_spike | type, org, department, user, month |
| new_service_in_department | type, org, department, service |

(Budget alerts are raised by the billing service from the stored ledger: civicmeter.billing.)

The same misuse by the same subject in the same period folds into one key: the engine reports
it once, and a store keyed on it stays idempotent when an alert is raised again after a
restart. Explanations hold ids, categories, counts and times, never prompt or response text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from civicmeter.api.severity import Severity

KEY_SEPARATOR = "|"


@dataclass(frozen=True)
class Alert:
    alert_type: str  # one of civicmeter.policy.detectors.DETECTOR_NAMES
    severity: Severity
    organization_id: str
    department_id: str
    user_id: str  # pseudonymous
    service_id: str
    provider_name: str
    event_id: str  # the event that raised it
    event_time: datetime  # that event's time, UTC
    dedup_key: str
    explanation: str  # English; attributes["explanation_ko"] holds the Korean
    attributes: dict[str, str] = field(default_factory=dict)


def dedup_key(*parts: str) -> str:
    return KEY_SEPARATOR.join(parts)


def short_user(user_id: str) -> str:
    """A pseudonymous id shortened for a sentence (the alert carries the whole id)."""
    return user_id if len(user_id) <= 14 else user_id[:12] + "…"


def day_label(local: datetime) -> str:
    """e.g. 2024-03-04"""
    # isoformat writes what strftime's %Y-%m-%d does (for four-digit years), quicker.
    return local.date().isoformat() if local.year >= 1000 else f"{local:%Y-%m-%d}"


def minute_label(local: datetime) -> str:
    """e.g. 2024-03-04 22:15 KST"""
    # isoformat writes what strftime's %Y-%m-%d %H:%M does (for four-digit years), quicker.
    when = local.isoformat(" ", "minutes")[:16] if local.year >= 1000 else f"{local:%Y-%m-%d %H:%M}"
    return f"{when} {local.tzname() or ''}".rstrip()
