"""Slack-compatible webhook messages, posted with retries (backoff or Retry-After)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry import metrics
from yarl import URL

from civicmeter.api.alert.v1 import alert_pb2
from civicmeter.api.severity import SEVERITY_NAMES
from civicmeter.gateway.http_retry import (
    RetryableAnswer,
    RetryPolicy,
    http_retrying,
    raise_if_retryable,
)

_COLOURS = {"low": "#439FE0", "medium": "warning", "high": "danger", "critical": "#7B0000"}


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    reason: str
    status: int | None = None  # the last HTTP status answered, if any

    @property
    def outcome(self) -> str:
        """delivered; rejected (a 4xx other than 429, not retried); or failed (5xx, 429 or
        network failures until given up)."""
        if self.delivered:
            return "delivered"
        if self.status is not None and 400 <= self.status < 500 and self.status != 429:
            return "rejected"
        return "failed"


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
    policy: RetryPolicy,
    duration: metrics.Histogram | None = None,
) -> Delivery:
    """POST until a 2xx; retry 429, 5xx and connection failures (after the Retry-After a 429
    or 503 asks for); give up on other answers. Each attempt's duration goes to `duration`
    (http.client.request.duration)."""
    attempts = 0
    server = URL(url).host or ""
    try:
        async for attempt in http_retrying(policy, (aiohttp.ClientError, TimeoutError)):
            with attempt:
                attempts = attempt.retry_state.attempt_number
                started = time.perf_counter()
                status: int | None = None
                try:
                    async with session.post(url, json=payload) as response:
                        status = response.status
                        raise_if_retryable(response)
                        if 200 <= response.status < 300:
                            return Delivery(True, attempts, "", status)
                        return Delivery(False, attempts, f"HTTP {status}", status)
                finally:
                    if duration is not None:
                        duration.record(
                            time.perf_counter() - started, _request_attributes(server, status)
                        )
    except RetryableAnswer as exc:
        return Delivery(False, attempts, str(exc), exc.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Delivery(False, attempts, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: tenacity either returns an attempt or raises")


def _request_attributes(server: str, status: int | None) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {"http.request.method": "POST", "server.address": server}
    if status is None:
        attributes["error.type"] = "connection"  # no answer: refused, reset or timed out
    else:
        attributes["http.response.status_code"] = status
    return attributes
