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
INVALID_ARGUMENT, a TenantError PERMISSION_DENIED, a RefusedError its own status and message,
and any other exception INTERNAL with a generic message (the detail is logged here, never sent).
Each call gets exactly one audit row, with the status the client saw and the organisation it
asked for. Calls without a valid credential are rate-limited per peer address.

The same checks guard methods served by grpc.aio and, once wrapped with `guard(...,
threaded=True)`, by the thread-pool server (grpc.server): one admission (`_Admission`) used
as `async with` or `with`. The audit queue and the rate limiters are therefore shared by
threads, and locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from civicmeter.core.store.connection import StorageCalls
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


class RefusedError(Exception):
    """A call answered with `code` and `message` (a sentence for the client, naming the field
    or the limit): what admission and servicers raise, whichever server runs them."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    served_for(scope or "*")
    return scope


def served_for(organization: str) -> None:
    """Note the organisation the current call is served for, for its audit row."""
    noted = _scoped.get(None)
    if noted is not None:
        noted.append(organization)


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


def _insert_audit_rows(rows: list[list[Any]], client: Client) -> None:
    # Module-level, so that it can be sent to a storage process (pickled by name).
    client.insert("audit_log", rows, column_names=AUDIT_COLUMNS)


class AuditLog:
    """Buffers call records and writes them in batches, so auditing costs a call an append.

    The queue is bounded (max_pending records): a record that finds it full is never lost
    silently, it is counted (`dropped`) and logged at the next flush. A caller that must not
    go on without its record asks `has_room()` first (the decision service refuses the call).
    Records may come from several threads (the thread-pool server's) while the writer takes a
    batch: the queue's changes are locked, so none lands in a batch already written.
    """

    def __init__(
        self,
        storage: StorageCalls,
        flush_seconds: float = 1.0,
        max_pending: int = MAX_PENDING_AUDIT,
    ) -> None:
        self._storage = storage
        self._flush_seconds = flush_seconds
        self._max_pending = max_pending
        self._pending: list[AuditEntry] = []
        self.dropped = 0  # records refused or discarded since the start, all logged
        self._reported = 0
        self._lock = threading.Lock()

    def has_room(self) -> bool:
        return len(self._pending) < self._max_pending

    def record(self, entry: AuditEntry) -> bool:
        """Queue the record; False (counted, logged at the next flush) when the queue is full."""
        with self._lock:
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
        with self._lock:
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
        try:
            await self._storage.run(functools.partial(_insert_audit_rows, rows))
        except BaseException:
            # Kept for the next flush, up to the bound: a storage outage neither loses the
            # records of a moment nor grows memory without end.
            with self._lock:
                self._pending[:0] = batch
                excess = len(self._pending) - self._max_pending
                if excess > 0:
                    del self._pending[:excess]
                    self.dropped += excess
            if excess > 0:
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
        # The buckets are read and written by every call; under the thread-pool server, by
        # several threads at once (uncontended under grpc.aio).
        self._limits_lock = threading.Lock()
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

    def guard(
        self, method: str, handler: grpc.RpcMethodHandler, *, threaded: bool = False
    ) -> grpc.RpcMethodHandler:
        """`handler` behind the same checks, status mapping and audit as intercepted calls get,
        wrapped once rather than on every call: for a server whose hot path should not pay
        for an interceptor (an extra coroutine and a new handler per call), such as the
        decision service's own process (query.decision_server). Unary and server-streaming;
        `threaded`: `handler`'s behaviours are plain functions and generators, served by the
        thread-pool server (grpc.server), rather than coroutines served by grpc.aio."""
        allowed = METHOD_ROLES.get(method, ADMIN_ONLY)
        keys = self._keys
        deserializer = _tolerant(handler.request_deserializer)

        def admission(context: Any, request: Any) -> _Admission:
            caller = (
                OPEN_ACCESS
                if keys is None
                else keys.authenticate(_bearer_in(context.invocation_metadata()))
            )
            return _Admission(self, caller, allowed, method, context, request)

        behavior: Any
        if handler.unary_unary is not None:
            inner = handler.unary_unary
            if threaded:

                def unary_in_thread(request: Any, context: grpc.ServicerContext) -> Any:
                    with admission(context, request):
                        return inner(request, context)

                behavior = unary_in_thread
            else:

                async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    async with admission(context, request):
                        return await inner(request, context)

                behavior = unary
            return grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream
            if threaded:

                def stream_in_thread(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    with admission(context, request):
                        yield from inner_stream(request, context)

                behavior = stream_in_thread
            else:

                async def stream(
                    request: Any, context: grpc.aio.ServicerContext
                ) -> AsyncIterator[Any]:
                    async with admission(context, request):
                        async for response in inner_stream(request, context):
                            yield response

                behavior = stream
            return grpc.unary_stream_rpc_method_handler(
                behavior,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ValueError(f"{method}: only unary and server-streaming methods can be guarded")

    def _admit(
        self,
        principal: Principal | None,
        allowed: frozenset[str],
        context: Any,
        request: Any,
    ) -> Principal:
        """The caller, admitted; or a RefusedError saying why not."""
        if principal is None and self._keys is not None:
            principal = self._keys.for_certificate(_certificate_name(context))
        if principal is None:
            with self._limits_lock:
                slowed = not self._unauthenticated.allow(_peer_address(context))
            if slowed:
                raise RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many calls without a valid credential from this address; retry later",
                )
            raise RefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: a valid `Bearer <API key>` is required",
            )
        if principal.role not in allowed:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {principal.role!r} may not call this method",
            )
        if self._limiter is not None:
            with self._limits_lock:
                limited = not self._limiter.allow(principal.key_id)
            if limited:
                raise RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self._limiter.rate:g} calls/s for key "
                    f"{principal.key_id!r} exceeded; retry with backoff",
                )
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if isinstance(request, _Undecodable):
            raise RefusedError(invalid, "request: is not a valid message of this method")
        try:
            check_request(request)
        except ArgumentError as exc:
            raise RefusedError(invalid, str(exc)) from None
        return principal

    def _note(
        self,
        principal: Principal | None,
        method: str,
        context: Any,
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


def _status_name(context: Any) -> str:
    code = context.code()
    return "OK" if code is None else str(getattr(code, "name", code))


class _ClientGoneError(Exception):
    """A thread-pool call whose client went away (cancelled, or its deadline passed) while the
    handler ran: that server tells the handler nothing, its context is simply no longer active."""


def _aborted(error: BaseException, context: Any) -> bool:
    """Whether the handler aborted the call itself: grpc.aio raises AbortError; the thread-pool
    server's context.abort sets the status and raises a bare Exception."""
    if isinstance(error, grpc.aio.AbortError):
        return True
    return type(error) is Exception and not error.args and context.code() is not None


def _outcome(error: BaseException | None, context: Any, method: str) -> tuple[str, str | None]:
    """The status the client sees for a call that ended with `error`, and the message to abort
    with (None when the call already carries its status)."""
    if error is None or _aborted(error, context):
        return _status_name(context), None
    if isinstance(error, asyncio.CancelledError | GeneratorExit | _ClientGoneError):
        # The client's deadline runs out before the server's by the request's transit time,
        # and its cancellation can arrive first: one that close to the deadline is the deadline.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= _DEADLINE_TRANSIT_SECONDS
        return ("DEADLINE_EXCEEDED" if expired else "CANCELLED"), None
    if isinstance(error, RefusedError):
        return error.code.name, error.message
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
    manager: it runs on every call. `async with` under grpc.aio, `with` in a thread of the
    thread-pool server; both abort through the call's own context."""

    __slots__ = ("_access", "_allowed", "_closed", "_context", "_current", "_method",
                 "_principal", "_request", "_scoped", "_scopes", "_started")  # fmt: skip

    def __init__(
        self,
        access: AccessInterceptor,
        principal: Principal | None,
        allowed: frozenset[str],
        method: str,
        context: Any,
        request: Any,
    ) -> None:
        self._access = access
        self._principal = principal
        self._allowed = allowed
        self._method = method
        self._context = context
        self._request = request

    async def __aenter__(self) -> None:
        refused = self._open()
        if refused is not None:
            await self._context.abort(*refused)
        # A streaming call cancelled while its response is being sent leaves the handler's
        # generator suspended at `yield`; grpc.aio closes it only when it is collected, which
        # may be never within the call's life. The call's end audits it then.
        self._context.add_done_callback(self._on_done)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        refused = self._shut(error)
        if refused is not None:
            await self._context.abort(*refused)

    def __enter__(self) -> None:
        refused = self._open()
        if refused is not None:
            self._context.abort(*refused)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None and not self._context.is_active():
            error = _ClientGoneError()
        refused = self._shut(error)
        if refused is not None:
            self._context.abort(*refused)

    def _open(self) -> tuple[grpc.StatusCode, str] | None:
        """Admit the call and make its principal current; or audit its refusal and return the
        status and message to abort with."""
        self._started = time.monotonic()
        self._closed = False
        self._scopes: list[str] = []
        self._scoped = _scoped.set(self._scopes)
        try:
            self._principal = self._access._admit(
                self._principal, self._allowed, self._context, self._request
            )
        except BaseException as error:
            status, message = _outcome(error, self._context, self._method)
            self._close(status)  # refused: audited too
            if message is None:
                raise
            return grpc.StatusCode[status], message
        self._current = _principal.set(self._principal)
        return None

    def _shut(self, error: BaseException | None) -> tuple[grpc.StatusCode, str] | None:
        """Audit the call with its final status; the status and message to abort with when
        the call does not carry it yet."""
        if self._closed:
            return None  # audited when the call ended (_on_done); its context is gone
        _principal.reset(self._current)
        status, message = _outcome(error, self._context, self._method)
        self._close(status)
        return None if message is None else (grpc.StatusCode[status], message)

    def _on_done(self, context: Any) -> None:
        if not self._closed:
            self._record(_outcome(_ClientGoneError(), context, self._method)[0])

    def _close(self, status: str) -> None:
        self._record(status)
        _scoped.reset(self._scoped)

    def _record(self, status: str) -> None:
        """The call's one audit row."""
        if self._closed:
            return
        self._closed = True
        # The organisation the call was served for; for a call refused before its tenant scope
        # was settled (a foreign organisation, a bad credential), the one it asked for.
        organization = (
            ",".join(sorted(set(self._scopes)))
            if self._scopes
            else _requested_organization(self._request)
        )
        self._access._note(
            self._principal, self._method, self._context, self._started, status, organization
        )
