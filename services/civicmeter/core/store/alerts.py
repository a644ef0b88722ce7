"""Reading alerts as the sink stores them, folded by dedup key: list, change state, tail
the newly opened ones (for the alert API and the notifier).

alerts_opened has one row per alert; alert_occurrences counts its repeats; alert_states holds
acknowledgements and resolutions (the latest wins). Pages and the watch cursor run on
(opened_time, dedup_key), so neither skips nor repeats an alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2

LOOKUP_CHUNK = 2_000  # alerts per lookup of opened keys
_OPEN_STATES = (alert_pb2.ALERT_STATE_UNSPECIFIED, alert_pb2.ALERT_STATE_OPEN)
_SELECT = """
SELECT o.organization_id, o.dedup_key, o.alert_type, o.severity, o.department_id, o.user_id,
       o.service_id, o.provider_name, o.trigger_event_id, o.explanation, o.attributes,
       o.opened_time, occ.first_seen, occ.last_seen, occ.n, st.state, st.actor, st.changed
FROM (SELECT * FROM alerts_opened FINAL WHERE {where_opened}) AS o
LEFT JOIN (
    SELECT organization_id, dedup_key, min(event_time) AS first_seen,
           max(event_time) AS last_seen, count() AS n
    FROM alert_occurrences FINAL WHERE {where_org} GROUP BY organization_id, dedup_key
) AS occ ON occ.organization_id = o.organization_id AND occ.dedup_key = o.dedup_key
LEFT JOIN (
    SELECT organization_id, dedup_key, argMax(state, change_time) AS state,
           argMax(actor, change_time) AS actor, max(change_time) AS changed
    FROM alert_states WHERE {where_org} GROUP BY organization_id, dedup_key
) AS st ON st.organization_id = o.organization_id AND st.dedup_key = o.dedup_key
WHERE {where_state}
ORDER BY o.opened_time {order}, o.dedup_key {order}
LIMIT {limit}
"""


@dataclass(frozen=True)
class AlertFilter:
    organization_id: str | None
    min_severity: int = 0
    alert_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredAlert:
    alert: alert_pb2.Alert
    opened_ms: int


def _conditions(flt: AlertFilter, params: dict[str, Any]) -> tuple[list[str], list[str]]:
    opened: list[str] = []
    org: list[str] = []
    if flt.organization_id is not None:
        opened.append("organization_id = %(org)s")
        org.append("organization_id = %(org)s")
        params["org"] = flt.organization_id
    if flt.min_severity:
        opened.append("severity >= %(min_severity)s")
        params["min_severity"] = flt.min_severity
    if flt.alert_types:
        opened.append("alert_type IN %(types)s")
        params["types"] = list(flt.alert_types)
    return opened or ["1"], org or ["1"]


def _millis(value: datetime) -> int:
    return round(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)


def _to_alert(row: Sequence[Any]) -> StoredAlert:
    (org, key, alert_type, severity, dept, user, service, provider, trigger, explanation,
     attributes, opened, first, last, count, state, actor, changed) = row  # fmt: skip
    alert = alert_pb2.Alert(
        dedup_key=key, alert_type=alert_type, severity=severity, organization_id=org,
        department_id=dept, user_id=user, service_id=service, provider_name=provider,
        trigger_event_id=trigger, explanation=explanation, attributes=dict(attributes),
        occurrence_count=max(int(count), 1),
        state=state if state else alert_pb2.ALERT_STATE_OPEN, state_changed_by=actor,
    )  # fmt: skip
    alert.first_seen_time.FromMilliseconds(_millis(first))
    alert.last_seen_time.FromMilliseconds(_millis(last))
    if state:
        alert.state_change_time.FromMilliseconds(_millis(changed))
    return StoredAlert(alert, _millis(opened))


def list_alerts(
    client: Client, flt: AlertFilter, state: int, limit: int, before: tuple[int, str] | None
) -> list[StoredAlert]:
    """Newest first; `before` is the (opened ms, dedup key) of the previous page's last alert."""
    params: dict[str, Any] = {}
    where_opened, where_org = _conditions(flt, params)
    if before is not None:
        where_opened.append(
            "(opened_time, dedup_key) < "
            "(fromUnixTimestamp64Milli(%(before_ms)s, 'UTC'), %(before_key)s)"
        )
        params["before_ms"], params["before_key"] = before
    where_state = "1"
    if state in _OPEN_STATES and state:
        where_state = "st.state IN (0, 1)"
    elif state:
        where_state = "st.state = %(state)s"
        params["state"] = state
    sql = _SELECT.format(
        where_opened=" AND ".join(where_opened),
        where_org=" AND ".join(where_org),
        where_state=where_state,
        order="DESC",
        limit=int(limit),
    )
    return [_to_alert(row) for row in client.query(sql, parameters=params).result_rows]


def alerts_after(
    client: Client, flt: AlertFilter, after: tuple[int, str], limit: int
) -> list[StoredAlert]:
    """Alerts opened after the cursor (opened ms, dedup key), oldest first."""
    params: dict[str, Any] = {}
    where_opened, where_org = _conditions(flt, params)
    where_opened.append(
        "(opened_time, dedup_key) > (fromUnixTimestamp64Milli(%(after_ms)s, 'UTC'), %(after_key)s)"
    )
    params["after_ms"], params["after_key"] = after
    sql = _SELECT.format(
        where_opened=" AND ".join(where_opened),
        where_org=" AND ".join(where_org),
        where_state="1",
        order="ASC",
        limit=int(limit),
    )
    return [_to_alert(row) for row in client.query(sql, parameters=params).result_rows]


def get_alert(client: Client, organization_id: str, dedup_key: str) -> StoredAlert | None:
    params: dict[str, Any] = {"org": organization_id, "key": dedup_key}
    sql = _SELECT.format(
        where_opened="organization_id = %(org)s AND dedup_key = %(key)s",
        where_org="organization_id = %(org)s",
        where_state="1",
        order="DESC",
        limit=1,
    )
    rows = client.query(sql, parameters=params).result_rows
    return _to_alert(rows[0]) if rows else None


def record_state(
    client: Client, organization_id: str, dedup_key: str, state: int, actor: str, now_ms: int
) -> None:
    client.insert(
        "alert_states",
        [[organization_id, dedup_key, state, actor, now_ms]],
        column_names=("organization_id", "dedup_key", "state", "actor", "change_time"),
    )


def opened_keys(client: Client, alerts: Sequence[alert_pb2.Alert]) -> set[tuple[str, str]]:
    """The (organisation, dedup key) pairs of `alerts` already opened."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(alerts), LOOKUP_CHUNK):
        chunk = alerts[start : start + LOOKUP_CHUNK]
        rows = client.query(
            "SELECT organization_id, dedup_key FROM alerts_opened "
            "WHERE organization_id IN %(orgs)s AND dedup_key IN %(keys)s",
            parameters={
                "orgs": sorted({a.organization_id for a in chunk}),
                "keys": sorted({a.dedup_key for a in chunk}),
            },
        ).result_rows
        found.update((org, key) for org, key in rows)
    return found
