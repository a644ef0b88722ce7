"""civicmeter.alert.v1.AlertService: list, acknowledge and watch alerts over gRPC."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import grpc

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.core.store.alerts import (
    AlertFilter,
    alerts_after,
    get_alert,
    list_alerts,
    record_state,
)
from civicmeter.core.store.connection import Storage
from civicmeter.query import page_token
from civicmeter.query.access import abort_if_foreign, current_principal
from civicmeter.query.arguments import echo
from civicmeter.query.paging import page_size, position

SERVICE_NAME = alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name
MAX_REPLAY_SECONDS = 86_400
WATCH_POLL_SECONDS = 0.5
_WATCH = "watch"  # the fingerprint of watch cursors: they fit any filter


async def _filter(
    request: alert_service_pb2.AlertFilter, context: grpc.aio.ServicerContext
) -> AlertFilter:
    """The filter with the caller's tenant scope applied."""
    organization = await abort_if_foreign(context, request.organization_id)
    return AlertFilter(organization, int(request.min_severity), tuple(request.alert_types))


class AlertService(alert_service_pb2_grpc.AlertServiceServicer):
    def __init__(
        self,
        storage: Storage,
        poll_seconds: float = WATCH_POLL_SECONDS,
        tokens: page_token.PageTokens | None = None,
    ) -> None:
        self._storage = storage
        self._poll = poll_seconds
        self._tokens = tokens or page_token.process_tokens()

    async def ListAlerts(  # noqa: N802 (gRPC method name)
        self, request: alert_service_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> alert_service_pb2.ListAlertsResponse:
        size = await page_size(context, request.page_size)
        flt = await _filter(request.filter, context)
        fingerprint = page_token.fingerprint(flt, request.state)
        before: tuple[int, str] | None = None
        last_seen = await position(
            context, self._tokens, request.page_token, fingerprint, (int, str)
        )
        if last_seen is not None:
            ms, key = last_seen
            before = (int(ms), str(key))
        page = await self._storage.run(
            lambda c: list_alerts(c, flt, int(request.state), size + 1, before)
        )
        response = alert_service_pb2.ListAlertsResponse(alerts=[s.alert for s in page[:size]])
        if len(page) > size:
            last = page[size - 1]
            response.next_page_token = self._tokens.encode(
                [last.opened_ms, last.alert.dedup_key], fingerprint
            )
        return response

    async def AcknowledgeAlert(  # noqa: N802 (gRPC method name)
        self,
        request: alert_service_pb2.AcknowledgeAlertRequest,
        context: grpc.aio.ServicerContext,
    ) -> alert_service_pb2.AcknowledgeAlertResponse:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        organization = await abort_if_foreign(context, request.organization_id)
        if organization is None:
            await context.abort(invalid, "organization_id: is required")
        if not request.dedup_key:
            await context.abort(invalid, "dedup_key: is required")
        # Who changed the state is the credential's key, not what the request says.
        actor = current_principal().key_id
        state = request.state or alert_pb2.ALERT_STATE_ACKNOWLEDGED
        if state not in (alert_pb2.ALERT_STATE_ACKNOWLEDGED, alert_pb2.ALERT_STATE_RESOLVED):
            await context.abort(invalid, "state: must be ACKNOWLEDGED or RESOLVED")
        org, key = str(organization), request.dedup_key
        if await self._storage.run(lambda c: get_alert(c, org, key)) is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"dedup_key: no alert {echo(key)} in {echo(org)}"
            )
        now_ms = time.time_ns() // 1_000_000
        await self._storage.run(lambda c: record_state(c, org, key, int(state), actor, now_ms))
        stored = await self._storage.run(lambda c: get_alert(c, org, key))
        assert stored is not None
        return alert_service_pb2.AcknowledgeAlertResponse(alert=stored.alert)

    async def WatchAlerts(  # noqa: N802 (gRPC method name)
        self, request: alert_service_pb2.WatchAlertsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[alert_service_pb2.WatchAlertsResponse]:
        flt = await _filter(request.filter, context)
        resumed = await position(
            context, self._tokens, request.cursor, _WATCH, (int, str), "cursor"
        )
        if resumed is not None:
            ms, key = resumed
            after = (int(ms), str(key))
        else:
            if not 0 <= request.replay_seconds <= MAX_REPLAY_SECONDS:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"replay_seconds: must be between 0 and {MAX_REPLAY_SECONDS}",
                )
            after = (time.time_ns() // 1_000_000 - 1000 * request.replay_seconds, "")
        while True:  # until the client cancels, which cancels this generator
            batch = await self._storage.run(
                functools.partial(alerts_after, flt=flt, after=after, limit=500)
            )
            for stored in batch:
                after = (stored.opened_ms, stored.alert.dedup_key)
                yield alert_service_pb2.WatchAlertsResponse(
                    alert=stored.alert, cursor=self._tokens.encode(list(after), _WATCH)
                )
            if not batch:
                await asyncio.sleep(self._poll)
