"""The notifier loop: alerts newly opened in ClickHouse → their organisation's webhooks.

It keeps its place in alerts_opened in notifier_cursor, so a restart neither repeats nor skips
alerts, and records every delivery's outcome in alert_deliveries (core.store.notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from functools import partial

import aiohttp
from opentelemetry import metrics

from civicmeter.api.severity import SEVERITY_NAMES
from civicmeter.core.config import NotifierSettings
from civicmeter.core.store.alerts import AlertFilter, StoredAlert, alerts_after
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.migrations import migrate
from civicmeter.core.store.notifications import (
    delivery_row,
    load_cursor,
    record_delivery,
    save_cursor,
    save_progress,
)
from civicmeter.core.telemetry.metrics import http_client_duration
from civicmeter.core.telemetry.setup import Telemetry
from civicmeter.gateway.http_retry import RetryPolicy
from civicmeter.notifier.webhook import post_with_retries, slack_message
from civicmeter.policy.organization import PolicySet

log = logging.getLogger("civicmeter.notifier")
CURSOR_NAME = "webhooks"


class DeliveryMetrics:
    """civicmeter.notifier.deliveries by outcome (delivered, no_route, rejected, failed) and
    the webhook requests' http.client.request.duration."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._outcomes = meter.create_counter(
            "civicmeter.notifier.deliveries",
            unit="{delivery}",
            description="Webhook deliveries of alerts, by outcome",
        )
        self.duration = http_client_duration(meter)

    def count(self, outcome: str) -> None:
        self._outcomes.add(1, {"outcome": outcome})


async def deliver(
    session: aiohttp.ClientSession,
    storage: Storage,
    policies: PolicySet,
    environ: Mapping[str, str],
    stored: StoredAlert,
    retry: RetryPolicy,
    delivery_metrics: DeliveryMetrics,
    unrouted: list[list[object]],
) -> int:
    """Send one alert to every route of its severity; return how many webhooks it was posted
    to. The records of routes without a webhook URL are added to `unrouted`, for the caller to
    write with the cursor.

    Each route counts one delivery by its outcome; an alert its policy routes nowhere counts
    one no_route."""
    alert = stored.alert
    severity = SEVERITY_NAMES.get(alert.severity)
    routing = policies.for_organization(alert.organization_id).routing
    targets = routing.targets(severity) if severity else ()
    if not targets:
        delivery_metrics.count("no_route")
    posted = 0
    for index, target in enumerate(targets):
        name = target.env or f"route-{index}"
        url = target.resolve(environ)
        if url is None:
            delivery_metrics.count("no_route")
            reason = "the webhook URL is not configured"
            unrouted.append(delivery_row(stored, name, "no_route", 0, reason))
            continue
        posted += 1
        result = await post_with_retries(
            session, url, slack_message(alert), policy=retry, duration=delivery_metrics.duration
        )
        delivery_metrics.count(result.outcome)
        status = "delivered" if result.delivered else "failed"
        await storage.run(
            partial(
                record_delivery,
                alert=stored,
                target=name,
                status=status,
                attempts=result.attempts,
                reason=result.reason,
            )
        )
        if not result.delivered:
            log.error(
                "webhook %s failed for alert %s after %d attempts: %s",
                name,
                alert.dedup_key,
                result.attempts,
                result.reason,
            )
    return posted


async def serve(
    settings: NotifierSettings,
    storage: Storage,
    policies: PolicySet,
    telemetry: Telemetry,
    environ: Mapping[str, str],
    stop: asyncio.Event,
) -> None:
    await storage.run(migrate)
    delivery_metrics = DeliveryMetrics(telemetry.meter)
    saved = await storage.run(partial(load_cursor, name=CURSOR_NAME))
    # On first start, deliver what opens from now on, not the whole history.
    cursor = saved if saved is not None else (time.time_ns() // 10**6, "")
    await storage.run(partial(save_cursor, name=CURSOR_NAME, cursor=cursor))
    progress = partial(save_progress, name=CURSOR_NAME)
    log.info("notifier delivering alerts opened after %s", cursor)
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
    retry = RetryPolicy(max_attempts=settings.max_attempts, base_delay=settings.retry_base_seconds)
    # trust_env: honour HTTPS_PROXY where webhooks are only reachable through a proxy.
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        while not stop.is_set():
            batch = await storage.run(
                partial(alerts_after, flt=AlertFilter(None), after=cursor, limit=100)
            )
            # An alert posted to a webhook moves the saved cursor at once, so a restart never
            # posts it again. One that reached no webhook has no effect outside: its records and
            # the cursor's move wait for the next save, two inserts per batch rather than two
            # per alert (alerts can open by the hundred a second).
            unrouted: list[list[object]] = []
            saved = cursor
            for stored in batch:
                if stop.is_set():
                    break  # the cursor stands at the last alert delivered
                posted = await deliver(
                    session, storage, policies, environ, stored, retry, delivery_metrics, unrouted
                )
                cursor = (stored.opened_ms, stored.alert.dedup_key)
                if posted:
                    await storage.run(partial(progress, rows=unrouted, cursor=cursor))
                    unrouted, saved = [], cursor
            if cursor != saved:
                await storage.run(partial(progress, rows=unrouted, cursor=cursor))
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.poll_seconds)
