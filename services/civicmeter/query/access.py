"""Access to the query API: authentication, roles, tenant scope and the audit log.

An interceptor authenticates each call from its `authorization: Bearer <token>` metadata or,
under mutual TLS, its verified client certificate, whose common name is a key id
(UNAUTHENTICATED without either), checks the role may call the method
(PERMISSION_DENIED), makes the principal available to the servicers, and records the call in
ClickHouse's audit_log. Servicers call `tenant_scope` with the organisation a request names:
a caller scoped to one organisation gets it (or PERMISSION_DENIED for another one), so every
query carries the tenant predicate server-side. Health checks and reflection stay open.

The interceptor is also every call's last word on its status: a request that does not decode,
breaks a size bound or holds an enum number its enum does not define (query/arguments.py) is
INVALID_ARGUMENT before a servicer sees it; an ArgumentError a servicer raises is
INVALID_ARGUMENT, a TenantError PERMISSION_DENIED, and any other exception INTERNAL with a
generic message (the detail is logged here, never sent). Each call gets exactly one audit row,
with the status the client saw and the organisation it asked for. Calls without a valid
credential are rate-limited per peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple

import grpc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from google.protobuf.message import DecodeError, Message

from civicmeter.core.access.auth import OPEN_ACCESS, ApiKeys, Principal, bearer_token
from civicmeter.core.access.rate_limit import (
    RateLimiter as RateLimiter,  # re-exported for the server
)
from civicmeter.core.store.connection import Storage
from civicmeter.query.arguments import ArgumentError, check_request, echo

log = logging.getLogger("civicmeter.query.access")

METHOD_ROLES: dict[str, frozenset[str]] = {
    "/civicmeter.query.v1.QueryService/GetCostBreakdown": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.query.v1.QueryService/QueryUsage": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.query.v1.QueryService/GetCostSummary": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.query.v1.QueryService/ExportUsage": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.alert.v1.AlertService/ListAlerts": frozenset({"auditor", "security", "admin"}),
    "/civicmeter.alert.v1.AlertService/WatchAlerts": frozenset({"auditor", "security", "admin"}),
    "/civicmeter.alert.v1.AlertService/AcknowledgeAlert": frozenset({"security", "admin"}),
    "/civicmeter.seat.v1.SeatService/ListSeats": frozenset({"finance-reader", "auditor", "admin"}),
    "/civicmeter.seat.v1.SeatService/GetSeatSummary": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.budget.v1.BudgetService/ListBudgetStatuses": frozenset(
        {"finance-reader", "auditor", "admin"}),
    "/civicmeter.decision.v1.DecisionService/Decide": frozenset({"gateway", "admin"}),
    "/civicmeter.decision.v1.DecisionService/WatchPolicy": frozenset({"gateway", "admin"}),
}  # fmt: skip
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
ADMIN_ONLY = frozenset({"admin"})  # methods without an entry
UNAUTHENTICATED_RATE = 10.0  # calls a second per peer address without a valid credential
MAX_AUDITED_CHARS = 256  # of the organisation a request names, as the audit log records it
MAX_PENDING_AUDIT = 100_000  # records queued at most (about 100 s of 1,000 calls/s)
AUDIT_COLUMNS = ("call_time", "key_id", "principal_organization", "role", "method",
                 "organization_id", "status", "duration_ms", "peer")  # fmt: skip

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
_scoped: contextvars.ContextVar[list[str]] = contextvars.ContextVar("scoped")


class TenantError(Exception):
    """The caller asked for an organisation its key does not cover."""


def tenant_scope(requested: str) -> str | None:
    """The organisation a query must be restricted to (None: every organisation).

    Raises TenantError when a caller scoped to one organisation names another, and
    LookupError outside a call the interceptor admitted: without a principal, no data.
    """
    principal = _principal.get()
    if principal.sees_every_organization:
        scope = requested or None
    elif requested and requested != principal.organization_id:
        raise TenantError(f"organization_id: {echo(requested)} is outside this key's organisation")
    else:
        scope = principal.organization_id
    noted = _scoped.get(None)
    if noted is not None:
        noted.append(scope or "*")
    return scope


async def abort_if_foreign(context: grpc.aio.ServicerContext, requested: str) -> str | None:
    try:
        return tenant_scope(requested)
    except TenantError as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        raise AssertionError("unreachable") from None


class AuditEntry(NamedTuple):
    call_ms: int
    principal: Principal
    method: str
    organization_id: str
    status: str
    duration_ms: int
    peer: str


class AuditLog:
    """Buffers call records and writes them in batches, so auditing costs a call an append.

    The queue is bounded (max_pending records): a record that finds it full is never lost
    silently, it is counted (`dropped`) and logged at the next flush. A caller that must not
    go on without its record asks `has_room()` first (the decision service refuses the call).
    """

    def __init__(
        self, storage: Storage, flush_seconds: float = 1.0, max_pending: int = MAX_PENDING_AUDIT
    ) -> None:
        self._storage = storage
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        self._pending: list[AuditEntry] = []
        self.dropped = 0  # records refused or discarded since the start, all logged
        self._reported = 0

    def has_room(self) -> bool:
        return len(self._pending) < self._max_pending

    def record(self, entry: AuditEntry) -> bool:
        """Queue the record; False (counted, logged at the next flush) when the queue is full."""
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return False
        self._pending.append(entry)
        return True

    def _report_dropped(self) -> None:
        if self.dropped > self._reported:
            log.error(
                "audit log: %d records dropped, the queue of %d was full (storage failing or "
                "slow); %d in all",
                self.dropped - self._reported,
                self._max_pending,
                self.dropped,
            )
            self._reported = self.dropped

    async def flush(self) -> None:
        self._report_dropped()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        rows = [
            [
                e.call_ms,
                e.principal.key_id,
                e.principal.organization_id,
                e.principal.role,
                e.method,
                e.organization_id,
                e.status,
                e.duration_ms,
                e.peer,
            ]
            for e in batch
        ]

        def insert(client: Client) -> None:
            client.insert("audit_log", rows, column_names=AUDIT_COLUMNS)

        try:
            await self._storage.run(insert)
        except BaseException:
            # Kept for the next flush, up to the bound: a storage outage neither loses the
            # records of a moment nor grows memory without end.
            self._pending[:0] = batch
            excess = len(self._pending) - self._max_pending
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
                self._report_dropped()
            raise

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._flush_seconds)
            try:
                await self.flush()
            except (ClickHouseError, OSError):
                log.exception("audit log: writing failed; retrying at the next flush")


UNAUTHENTICATED = Principal("unauthenticated", "", "")


def _certificate_name(context: grpc.aio.ServicerContext) -> str:
    """The common name of the client certificate TLS verified, or "" without one."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else ""


def _bearer(details: grpc.HandlerCallDetails) -> str:
    return _bearer_in(details.invocation_metadata)


def _bearer_in(metadata: Any) -> str:
    """The bearer token of call metadata, or ""."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            return bearer_token(value)
    return ""


def current_principal() -> Principal:
    """The caller of the call being served (LookupError outside an admitted call)."""
    return _principal.get()


class _Undecodable:
    """What the request deserializer yields for bytes that are not the method's message, so
    the call is answered (and audited) rather than failing before any handler runs."""


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError):
            return _Undecodable()

    return decode


def _requested_organization(request: Any) -> str:
    """The organisation a request names (itself or in its filter), cut to a bounded length."""
    if not isinstance(request, Message):
        return ""
    named = getattr(request, "organization_id", None)
    if named is None:
        inner = getattr(request, "filter", None)
        named = getattr(inner, "organization_id", "")
    return str(named)[:MAX_AUDITED_CHARS]


def _peer_address(context: grpc.aio.ServicerContext) -> str:
    """The peer without its port ("ipv4:10.0.0.7"), so one host's connections share a bucket."""
    peer: str = context.peer() or ""
    kind, _, rest = peer.partition(":")
    return f"{kind}:{rest.rsplit(':', 1)[0]}" if kind in ("ipv4", "ipv6") else peer


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        keys: ApiKeys | None,
        audit: AuditLog | None,
        limiter: RateLimiter | None = None,
        unauthenticated_limiter: RateLimiter | None = None,
    ) -> None:
        self._keys = keys
        self._audit = audit
        self._limiter = limiter
        # Calls without a valid credential, per peer address: a guessing client is slowed down.
        self._unauthenticated = unauthenticated_limiter or RateLimiter(
            UNAUTHENTICATED_RATE, 2 * UNAUTHENTICATED_RATE
        )
        if keys is None:
            log.warning("no API keys configured: the query API is open to every caller")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        principal = OPEN_ACCESS if self._keys is None else self._keys.authenticate(_bearer(details))
        allowed = METHOD_ROLES.get(method, ADMIN_ONLY)
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _Admission(self, principal, allowed, method, context, request):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _Admission(self, principal, allowed, method, context, request):
                    async for response in inner_stream(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` behind the same checks, status mapping and audit as intercepted calls get,
        wrapped once rather than on every call: for a server whose hot path should not pay
        for an interceptor (an extra coroutine and a new handler per call), such as the
        decision service's own process (query.decision_server). Unary and server-streaming."""
        allowed = METHOD_ROLES.get(method, ADMIN_ONLY)
        keys = self._keys
        deserializer = _tolerant(handler.request_deserializer)

        def caller(context: grpc.aio.ServicerContext) -> Principal | None:
            if keys is None:
                return OPEN_ACCESS
            return keys.authenticate(_bearer_in(context.invocation_metadata()))

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _Admission(self, caller(context), allowed, method, context, request):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _Admission(self, caller(context), allowed, method, context, request):
                    async for response in inner_stream(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ValueError(f"{method}: only unary and server-streaming methods can be guarded")

    async def _admit(
        self,
        principal: Principal | None,
        allowed: frozenset[str],
        context: grpc.aio.ServicerContext,
        request: Any,
    ) -> Principal:
        if principal is None and self._keys is not None:
            principal = self._keys.for_certificate(_certificate_name(context))
        if principal is None:
            if not self._unauthenticated.allow(_peer_address(context)):
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many calls without a valid credential from this address; retry later",
                )
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: a valid `Bearer <API key>` is required",
            )
        assert principal is not None
        if principal.role not in allowed:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role!r} may not call this method",
            )
        if self._limiter is not None and not self._limiter.allow(principal.key_id):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {self._limiter.rate:g} calls/s for key "
                f"{principal.key_id!r} exceeded; retry with backoff",
            )
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if isinstance(request, _Undecodable):
            await context.abort(invalid, "request: is not a valid message of this method")
        try:
            check_request(request)
        except ArgumentError as exc:
            await context.abort(invalid, str(exc))
        return principal

    def _note(
        self,
        principal: Principal | None,
        method: str,
        context: grpc.aio.ServicerContext,
        started: float,
        status: str,
        organization: str,
    ) -> None:
        if self._audit is None:
            return
        self._audit.record(
            AuditEntry(
                call_ms=time.time_ns() // 1_000_000,
                principal=principal or UNAUTHENTICATED,
                method=method,
                organization_id=organization,
                status=status,
                duration_ms=int((time.monotonic() - started) * 1000),
                peer=context.peer() or "",
            )
        )


_DEADLINE_TRANSIT_SECONDS = 0.5


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else str(getattr(code, "name", code))


def _outcome(
    error: BaseException | None, context: grpc.aio.ServicerContext, method: str
) -> tuple[str, str | None]:
    """The status the client sees for a call that ended with `error`, and the message to abort
    with (None when the call already carries its status)."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        return _status_name(context), None
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # The client's deadline runs out before the server's by the request's transit time,
        # and its cancellation can arrive first: one that close to the deadline is the deadline.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= _DEADLINE_TRANSIT_SECONDS
        return ("DEADLINE_EXCEEDED" if expired else "CANCELLED"), None
    if isinstance(error, ArgumentError):
        return "INVALID_ARGUMENT", str(error)
    if isinstance(error, TenantError):
        return "PERMISSION_DENIED", str(error)
    if not isinstance(error, Exception):
        return "UNKNOWN", None  # KeyboardInterrupt, SystemExit: the process is going away
    incident = secrets.token_hex(4)
    log.error("%s failed (incident %s)", method, incident, exc_info=error)
    return "INTERNAL", f"internal error (incident {incident}); the server logged the details"


class _Admission:
    """One call's admission: admit it (or abort it), make its principal current, give it its
    final status, and audit it once at the end. A plain class, not a generator context
    manager: it runs on every call."""

    __slots__ = ("_access", "_allowed", "_context", "_current", "_method", "_principal",
                 "_request", "_scoped", "_started")  # fmt: skip

    def __init__(
        self,
        access: AccessInterceptor,
        principal: Principal | None,
        allowed: frozenset[str],
        method: str,
        context: grpc.aio.ServicerContext,
        request: Any,
    ) -> None:
        self._access = access
        self._principal = principal
        self._allowed = allowed
        self._method = method
        self._context = context
        self._request = request

    async def __aenter__(self) -> None:
        self._started = time.monotonic()
        self._scoped = _scoped.set([])
        try:
            self._principal = await self._access._admit(
                self._principal, self._allowed, self._context, self._request
            )
        except BaseException as error:
            self._close(_outcome(error, self._context, self._method)[0])  # refused: audited too
            raise
        self._current = _principal.set(self._principal)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _principal.reset(self._current)
        status, message = _outcome(error, self._context, self._method)
        self._close(status)
        if message is not None:
            await self._context.abort(grpc.StatusCode[status], message)

    def _close(self, status: str) -> None:
        scopes = _scoped.get([])
        # The organisation the call was served for; for a call refused before its tenant scope
        # was settled (a foreign organisation, a bad credential), the one it asked for.
        organization = (
            ",".join(sorted(set(scopes))) if scopes else _requested_organization(self._request)
        )
        self._access._note(
            self._principal, self._method, self._context, self._started, status, organization
        )
        _scoped.reset(self._scoped)
