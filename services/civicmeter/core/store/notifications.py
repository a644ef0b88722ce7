"""The notifier's records: where each notifier left off in alerts_opened (notifier_cursor; the
latest row per name wins), and every delivery attempt's outcome (alert_deliveries), so no alert
is dropped silently. A delivery names its route, never the webhook URL (a secret).
"""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client

from civicmeter.core.store.alerts import StoredAlert


def load_cursor(client: Client, *, name: str) -> tuple[int, str] | None:
    """The (opened ms, dedup key) of the last alert the notifier `name` has done with."""
    rows = client.query(
        "SELECT opened_ms, dedup_key FROM notifier_cursor FINAL WHERE name = %(name)s",
        parameters={"name": name},
    ).result_rows
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def save_cursor(client: Client, *, name: str, cursor: tuple[int, str]) -> None:
    client.insert(
        "notifier_cursor",
        [[name, cursor[0], cursor[1], time.time_ns() // 10**6]],
        column_names=("name", "opened_ms", "dedup_key", "updated_time"),
    )


def record_delivery(
    client: Client, alert: StoredAlert, target: str, status: str, attempts: int, reason: str
) -> None:
    record_deliveries(client, [delivery_row(alert, target, status, attempts, reason)])


def delivery_row(
    alert: StoredAlert, target: str, status: str, attempts: int, reason: str
) -> list[object]:
    a = alert.alert
    return [a.organization_id, a.dedup_key, target, int(a.severity), status, attempts, reason,
            time.time_ns() // 10**6]  # fmt: skip


def save_progress(
    client: Client, *, name: str, rows: list[list[object]], cursor: tuple[int, str]
) -> None:
    """Record the deliveries held back, then move the cursor past their alerts."""
    record_deliveries(client, rows)
    save_cursor(client, name=name, cursor=cursor)


def record_deliveries(client: Client, rows: list[list[object]]) -> None:
    if not rows:
        return
    client.insert(
        "alert_deliveries",
        rows,
        column_names=(
            "organization_id",
            "dedup_key",
            "target",
            "severity",
            "status",
            "attempts",
            "reason",
            "delivered_time",
        ),
    )
