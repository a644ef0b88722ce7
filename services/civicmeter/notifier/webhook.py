"""Slack-compatible webhook messages, posted with retries and exponential backoff."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from civicmeter.alert.v1 import alert_pb2
from civicmeter.core.severity import SEVERITY_NAMES

_COLOURS = {"low": "#439FE0", "medium": "warning", "high": "danger", "critical": "#7B0000"}


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    reason: str


def slack_message(alert: alert_pb2.Alert) -> dict[str, Any]:
    """An incoming-webhook payload: the explanation (English, then Korean), and the details."""
    severity = SEVERITY_NAMES.get(alert.severity, "unspecified")
    lines = [
        f"*[{severity.upper()}] {alert.alert_type}* in {alert.organization_id}: {alert.explanation}"
    ]
    korean = alert.attributes.get("explanation_ko")
    if korean:
        lines.append(korean)
    return {
        "text": "\n".join(lines),
        "unfurl_links": False,
        "attachments": [{
            "color": _COLOURS.get(severity, "#cccccc"),
            "fields": [
                {"title": "organisation", "value": alert.organization_id, "short": True},
                {"title": "department", "value": alert.department_id, "short": True},
                {"title": "user", "value": alert.user_id, "short": True},
                {"title": "service", "value": alert.service_id, "short": True},
                {"title": "first seen", "value": alert.first_seen_time.ToJsonString(),
                 "short": True},
                {"title": "alert", "value": alert.dedup_key, "short": False},
            ],
        }],
    }  # fmt: skip


async def post_with_retries(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    *,
    max_attempts: int = 5,
    base_delay: float = 0.5,
) -> Delivery:
    """POST until a 2xx; retry 429, 5xx and connection failures; give up on other 4xx."""
    reason = ""
    for attempt in range(1, max_attempts + 1):
        try:
            async with session.post(url, json=payload) as response:
                if 200 <= response.status < 300:
                    return Delivery(True, attempt, "")
                reason = f"HTTP {response.status}"
                if 400 <= response.status < 500 and response.status != 429:
                    return Delivery(False, attempt, reason)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt < max_attempts:
            # Exponential backoff with jitter, so retries of many alerts do not stampede.
            await asyncio.sleep(base_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    return Delivery(False, max_attempts, reason)
