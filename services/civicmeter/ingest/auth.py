"""Who may report usage: ingest authenticates each gateway and checks every event is its own.

A call presents a gateway key as `Authorization: Bearer <token>` (HTTP header or gRPC
metadata) or, under mutual TLS, a verified client certificate whose common name is a key id;
the key file (CIVICMETER_INGEST_KEYS_FILE) holds only the tokens' hashes, each with the
organisations (and optionally the gateway ids) the key may report for. Without a valid
credential: 401 / UNAUTHENTICATED. An event of another organisation or gateway refuses the
whole batch before anything is published: 403 / PERMISSION_DENIED naming the event, e.g.
`events[3].organization_id`.

Refused calls are counted (`civicmeter.ingest.refused_calls`, by reason and protocol) and
limited per peer address: past the limit a peer's refused calls get 429 / RESOURCE_EXHAUSTED
with the time to wait. Only refusals spend the peer's allowance, so a flood of bad calls from
an address shared with honest gateways (a NAT, a proxy) never locks the honest ones out.

Without a key file ingest is open to every caller, for development (it logs a warning).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import grpc
from aiohttp import web
from opentelemetry import metrics

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import GATEWAY_ROLE, ApiKeys, Principal, bearer_token
from civicmeter.core.access.rate_limit import RateLimiter
from civicmeter.core.config import TlsFiles

log = logging.getLogger("civicmeter.ingest.auth")

UNAUTHENTICATED = "unauthenticated"
PERMISSION_DENIED = "permission_denied"
RATE_LIMITED = "rate_limited"
_HTTP_STATUS = {UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, RATE_LIMITED: 429}
_GRPC_CODE = {
    UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_ECHO_CHARS = 64  # request values quoted back in a refusal are cut to this length
_ORGANIZATION, _GATEWAY = attrgetter("organization_id"), attrgetter("gateway_id")


@dataclass(frozen=True)
class Refusal:
    reason: str  # UNAUTHENTICATED, PERMISSION_DENIED or RATE_LIMITED
    message: str
    retry_after_seconds: float = 0.0

    def http_response(self) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if self.reason == UNAUTHENTICATED else {}
        if self.reason == RATE_LIMITED:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_seconds)))
        return web.json_response(
            {"error": self.message}, status=_HTTP_STATUS[self.reason], headers=headers
        )

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC_CODE[self.reason]


class GatewayAccess:
    """Admits a call by its credential, then a batch by the organisations of its events."""

    def __init__(
        self,
        keys: ApiKeys | None,
        meter: metrics.Meter,
        refused_limiter: RateLimiter | None = None,
    ) -> None:
        self._keys = keys
        self._limiter = refused_limiter
        self._refused = meter.create_counter(
            "civicmeter.ingest.refused_calls",
            unit="{call}",
            description="Calls ingest refused for their credential, by reason and protocol",
        )
        if keys is None:
            log.warning(
                "no gateway keys configured (CIVICMETER_INGEST_KEYS_FILE): ingest accepts "
                "events for every organisation from every caller"
            )

    def authenticate(
        self, token: str, certificate_name: str, peer: str, protocol: str
    ) -> Principal | Refusal:
        """The gateway key a call presents (a bearer token, else its client certificate)."""
        if self._keys is None:
            return _OPEN_GATEWAY
        principal = self._keys.authenticate(token) if token else None
        if principal is None and certificate_name:
            principal = self._keys.for_certificate(certificate_name)
        if principal is None:
            return self._refuse(
                UNAUTHENTICATED,
                "authorization: a valid `Bearer <gateway key>` or client certificate is required",
                peer,
                protocol,
            )
        if principal.role != GATEWAY_ROLE:
            return self._refuse(
                PERMISSION_DENIED,
                f"authorization: key {principal.key_id!r} is not a gateway key",
                peer,
                protocol,
            )
        return principal

    def check_events(
        self,
        principal: Principal,
        events: Sequence[pb.UsageEvent],
        peer: str,
        protocol: str,
        name: Callable[[str], str] = str,
    ) -> Refusal | None:
        """A refusal naming the first event the key may not report, or None: all are its own.
        `name` gives a field's name as the caller sent it (CloudEvents: `source`)."""
        if principal.sees_every_organization and not principal.gateway_ids:
            return None  # a platform relay's key, or no key file: every event is its own
        if all(map(principal.reports_for, set(map(_ORGANIZATION, events)))) and all(
            map(principal.reports_as, set(map(_GATEWAY, events)))
        ):
            return None  # each distinct organisation and gateway checked once
        for index, event in enumerate(events):
            if not principal.reports_for(event.organization_id):
                field, value, what = "organization_id", event.organization_id, "for organisation"
            elif not principal.reports_as(event.gateway_id):
                field, value, what = "gateway_id", event.gateway_id, "as gateway"
            else:
                continue
            return self._refuse(
                PERMISSION_DENIED,
                f"events[{index}].{name(field)}: key {principal.key_id!r} may not report usage "
                f"{what} {value[:_ECHO_CHARS]!r}",
                peer,
                protocol,
            )
        return None

    def _refuse(self, reason: str, message: str, peer: str, protocol: str) -> Refusal:
        if self._limiter is not None and not self._limiter.allow(peer):
            self._refused.add(1, {"reason": RATE_LIMITED, "protocol": protocol})
            wait = self._limiter.retry_after(peer)
            return Refusal(
                RATE_LIMITED,
                f"too many refused calls from this address; retry in {math.ceil(wait)} s",
                wait,
            )
        self._refused.add(1, {"reason": reason, "protocol": protocol})
        return Refusal(reason, message)


# Without a key file every caller reports as this principal, for any organisation.
_OPEN_GATEWAY = Principal("open-ingest", "*", GATEWAY_ROLE)


# --- HTTP -----------------------------------------------------------------------------------

GATEWAY_ACCESS = web.AppKey("gateway_access", GatewayAccess)
_PRINCIPAL = web.RequestKey("gateway_principal", Principal)  # set by the middleware
AUTHENTICATED_PATHS = frozenset({"/v1/events", "/v1/traces"})  # /healthz stays open


@web.middleware
async def http_authentication(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Authenticate before the body is read: a refused call costs a hash, not a decode."""
    access = request.app.get(GATEWAY_ACCESS)
    if access is None or request.path not in AUTHENTICATED_PATHS:
        return await handler(request)
    outcome = access.authenticate(
        bearer_token(request.headers.get("Authorization")),
        _http_certificate_name(request),
        request.remote or "",
        "http",
    )
    if isinstance(outcome, Refusal):
        return outcome.http_response()
    request[_PRINCIPAL] = outcome
    return await handler(request)


def refuse_foreign_events(
    request: web.Request, events: Sequence[pb.UsageEvent], name: Callable[[str], str] = str
) -> web.Response | None:
    """403 naming the first event the caller may not report; None when all are its own."""
    access = request.app.get(GATEWAY_ACCESS)
    principal = request.get(_PRINCIPAL)
    if access is None or principal is None:
        return None
    refusal = access.check_events(principal, events, request.remote or "", "http", name)
    return None if refusal is None else refusal.http_response()


def request_principal(request: web.Request) -> Principal:
    """The key the middleware admitted the call with (without gateway access: open ingest)."""
    return request.get(_PRINCIPAL) or _OPEN_GATEWAY


def _http_certificate_name(request: web.Request) -> str:
    """The common name of the client certificate TLS verified, or "" without one."""
    if request.transport is None:
        return ""
    certificate: dict[str, Any] | None = request.transport.get_extra_info("peercert")
    for rdn in (certificate or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


@dataclass(frozen=True)
class ServerTls:
    """The same certificate, key and client CA for both fronts."""

    http: ssl.SSLContext
    grpc: grpc.ServerCredentials


def server_tls(files: TlsFiles) -> ServerTls | None:
    """TLS from the certificate and key; with a client CA, a verified client certificate is
    required (mutual TLS). None: plaintext."""
    if files.cert is None or files.key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    client_ca = files.client_ca.read_bytes() if files.client_ca else None
    if files.client_ca is not None:
        context.load_verify_locations(files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    credentials = grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return ServerTls(context, credentials)


# --- gRPC -----------------------------------------------------------------------------------


class GrpcAuthentication(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits each unary call of the ingest service; health checks and reflection stay open."""

    def __init__(self, access: GatewayAccess, service_prefix: str) -> None:
        self._access = access
        self._prefix = service_prefix

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if (
            handler is None
            or handler.unary_unary is None
            or not details.method.startswith(self._prefix)
        ):
            return handler
        token = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                token = bearer_token(value)
        inner = handler.unary_unary
        access = self._access

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            peer = _grpc_peer_address(context.peer() or "")
            outcome = access.authenticate(token, _grpc_certificate_name(context), peer, "grpc")
            if isinstance(outcome, Principal):
                outcome = access.check_events(outcome, request.events, peer, "grpc") or outcome
            if isinstance(outcome, Refusal):
                await context.abort(outcome.grpc_code, outcome.message)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def admit_grpc_call(
    access: GatewayAccess | None, context: grpc.aio.ServicerContext
) -> Principal:
    """Authenticate a call in its handler, for services whose requests carry no usage events
    (OTLP): the key, or the call is aborted with the refusal."""
    if access is None:
        return _OPEN_GATEWAY
    token = ""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            token = bearer_token(value)
    peer = _grpc_peer_address(context.peer() or "")
    outcome = access.authenticate(token, _grpc_certificate_name(context), peer, "grpc")
    if isinstance(outcome, Principal):
        return outcome
    await context.abort(outcome.grpc_code, outcome.message)
    raise AssertionError("abort raises")


def _grpc_certificate_name(context: grpc.aio.ServicerContext) -> str:
    names = context.auth_context().get("x509_common_name") or []
    return str(names[0].decode()) if names else ""


def _grpc_peer_address(peer: str) -> str:
    """`ipv4:10.0.0.7:51234` -> `10.0.0.7`, `ipv6:[::1]:5` -> `::1`: the address as HTTP
    names it, so both fronts share a peer's allowance."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return rest.rsplit(":", 1)[0].strip("[]")
