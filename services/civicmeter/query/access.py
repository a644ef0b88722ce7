"""Access to the query API: authentication, roles, tenant scope and the audit log.

An interceptor authenticates each call from its `authorization: Bearer <token>` metadata or,
under mutual TLS, its verified client certificate, whose common name is a key id
(UNAUTHENTICATED without either), checks the role may call the method
(PERMISSION_DENIED), makes the principal available to the servicers, and records the call in
ClickHouse's audit_log. Servicers call `tenant_scope` with the organisation a request names:
a caller scoped to one organisation gets it (or PERMISSION_DENIED for another one), so every
query carries the tenant predicate server-side. Health checks and reflection stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple

import grpc
from clickhouse_connect.driver.client import Client

from civicmeter.core.auth import OPEN_ACCESS, ApiKeys, Principal, bearer_token
from civicmeter.core.rate_limit import RateLimiter as RateLimiter  # re-exported for the server
from civicmeter.core.storage import Storage

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
}  # fmt: skip
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
ADMIN_ONLY = frozenset({"admin"})  # methods without an entry
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
        raise TenantError(f"organization_id: {requested!r} is outside this key's organisation")
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
    """Buffers call records and writes them in batches, so auditing costs a call little."""

    def __init__(self, storage: Storage, flush_seconds: float = 1.0) -> None:
        self._storage = storage
        self._flush_seconds = flush_seconds
        self._pending: list[AuditEntry] = []

    def record(self, entry: AuditEntry) -> None:
        self._pending.append(entry)

    async def flush(self) -> None:
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

        await self._storage.run(insert)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._flush_seconds)
            await self.flush()


UNAUTHENTICATED = Principal("unauthenticated", "", "")


def _certificate_name(context: grpc.aio.ServicerContext) -> str:
    """The common name of the client certificate TLS verified, or "" without one."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else ""


def _bearer(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == "authorization" and isinstance(value, str):
            return bearer_token(value)
    return ""


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self, keys: ApiKeys | None, audit: AuditLog | None, limiter: RateLimiter | None = None
    ) -> None:
        self._keys = keys
        self._audit = audit
        self._limiter = limiter
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
                async with _Admission(self, principal, allowed, method, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _Admission(self, principal, allowed, method, context):
                    async for response in inner_stream(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _admit(
        self,
        principal: Principal | None,
        allowed: frozenset[str],
        context: grpc.aio.ServicerContext,
    ) -> Principal:
        if principal is None and self._keys is not None:
            principal = self._keys.for_certificate(_certificate_name(context))
        if principal is None:
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
        return principal

    def _note(
        self,
        principal: Principal | None,
        method: str,
        context: grpc.aio.ServicerContext,
        started: float,
    ) -> None:
        if self._audit is None:
            return
        code = context.code()
        status = "OK" if code is None else getattr(code, "name", str(code))
        scopes = _scoped.get([])
        self._audit.record(
            AuditEntry(
                call_ms=time.time_ns() // 1_000_000,
                principal=principal or UNAUTHENTICATED,
                method=method,
                organization_id=",".join(sorted(set(scopes))),
                status=status,
                duration_ms=int((time.monotonic() - started) * 1000),
                peer=context.peer() or "",
            )
        )


class _Admission:
    """One call's admission: admit it (or abort it), make its principal current, and audit
    it at the end. A plain class, not a generator context manager: it runs on every call."""

    __slots__ = ("_access", "_allowed", "_context", "_current", "_method", "_principal",
                 "_scoped", "_started")  # fmt: skip

    def __init__(
        self,
        access: AccessInterceptor,
        principal: Principal | None,
        allowed: frozenset[str],
        method: str,
        context: grpc.aio.ServicerContext,
    ) -> None:
        self._access = access
        self._principal = principal
        self._allowed = allowed
        self._method = method
        self._context = context

    async def __aenter__(self) -> None:
        self._started = time.monotonic()
        self._scoped = _scoped.set([])
        try:
            self._principal = await self._access._admit(
                self._principal, self._allowed, self._context
            )
        except BaseException:
            self._close()  # a refused call is audited too
            raise
        self._current = _principal.set(self._principal)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _principal.reset(self._current)
        self._close()

    def _close(self) -> None:
        self._access._note(self._principal, self._method, self._context, self._started)
        _scoped.reset(self._scoped)
