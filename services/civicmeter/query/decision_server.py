"""The decision service in a process of its own: `civicmeter decision` (or `civicmeter serve
decision` beside other services), on its own port (CIVICMETER_DECISION_GRPC_PORT, 50053).

A gateway's `Decide` waits on this process alone, so the query service's ClickHouse work
(breakdowns, exports, its cache refreshes) never delays a decision. Everything else is the
query service's: the same API keys, roles, audit log, TLS settings and policy file
(QuerySettings from the environment), the same DecisionService, health checking and
reflection; only the per-key rate limit is its own (CIVICMETER_DECISION_RATE_PER_KEY). The
query service still serves DecisionService on its own port too, for gateways configured
before this process existed.

The call path holds no I/O: the policy in memory (reloaded when its file changes), the budget
state refreshed in the background (core.budgets, at most 2 s old), the audit row appended to a
bounded in-memory queue that a background task writes in batches (query.access.AuditLog).
Process tuning for the tail, measured in loadtests/guard/RESULTS.md:

- gc.freeze() once everything is loaded: the modules, policy and server objects leave the
  collector's generations, so a full collection no longer walks them under a call;
- a shorter GIL switch interval: the audit writer and the budget refresh run in threads, and
  the event loop waits at most this long for the GIL they hold (5 ms by default, the whole
  latency budget).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics

from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.core.access.auth import load_api_keys
from civicmeter.core.config import QuerySettings, env_float, env_port
from civicmeter.core.grpc_server import CallDurationInterceptor, GrpcServer
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.store.connection import Storage
from civicmeter.core.store.migrations import migrate
from civicmeter.query.access import AccessInterceptor, AuditLog, RateLimiter
from civicmeter.query.decision_service import SERVICE_NAME, DecisionService
from civicmeter.query.server import server_credentials

log = logging.getLogger("civicmeter.decision")
DEFAULT_PORT = 50053
DEFAULT_RATE_PER_KEY = 5000.0  # calls/s of one gateway key (bursts of twice that)
SWITCH_INTERVAL_SECONDS = 0.0005
MAX_REQUEST_BYTES = 64 * 1024  # a request is metadata and counts, never a prompt


def settings_from_env(env: Mapping[str, str]) -> QuerySettings:
    """The query service's settings, on the decision service's host and port, with its own
    per-key rate limit (CIVICMETER_DECISION_RATE_PER_KEY): a gateway asks once per request."""
    settings = QuerySettings.from_env(env)
    port = env_port(env, "CIVICMETER_DECISION_GRPC_PORT", DEFAULT_PORT)
    rate = env_float(env, "CIVICMETER_DECISION_RATE_PER_KEY", DEFAULT_RATE_PER_KEY, 0)
    host = env.get("CIVICMETER_DECISION_HOST", settings.host)
    return dataclasses.replace(settings, host=host, grpc_port=port, rate_per_key=rate)


def build_decision_server(
    settings: QuerySettings,
    storage: Storage,
    audit: AuditLog | None = None,
    meter: metrics.Meter | None = None,
) -> GrpcServer:
    """A grpc.aio server with DecisionService, health and reflection, and no interceptor: each
    method is wrapped once with the query API's access checks and audit (AccessInterceptor.
    guard) and timed (rpc.server.call.duration). Decide is therefore not traced (1,000 spans
    a second would cost more than the decision); each call's status is in the audit log."""
    keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
    limiter = (
        RateLimiter(settings.rate_per_key, 2 * settings.rate_per_key)
        if settings.rate_per_key > 0
        else None
    )
    access = AccessInterceptor(keys, audit, limiter)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
    policies = PolicySource(settings.policy_file)
    service = DecisionService(storage, policies.current, audit=audit)
    handlers = _MethodHandlers()
    decision_grpc.add_DecisionServiceServicer_to_server(service, handlers)
    timing = CallDurationInterceptor(meter or metrics.get_meter("civicmeter.grpc"))
    guarded = {
        name: timing.timed(method, access.guard(method, handler))
        for name, handler in handlers.methods.items()
        for method in (f"/{SERVICE_NAME}/{name}",)
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, guarded),))
    server.add_registered_method_handlers(SERVICE_NAME, guarded)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
    address = f"{settings.host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, credentials)
    return GrpcServer(server, health_servicer, (SERVICE_NAME,))


class _MethodHandlers:
    """Takes the method handlers the generated code would register on a server, so they can
    be wrapped before they are."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same methods as add_registered_method_handlers gets

    def add_registered_method_handlers(
        self, service: str, methods: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.methods.update(methods)


async def serve(settings: QuerySettings, storage: Storage, stop: asyncio.Event) -> None:
    await storage.run(migrate)
    audit = AuditLog(storage)
    grpc_server = build_decision_server(settings, storage, audit)
    await grpc_server.start()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.collect()
    gc.freeze()
    log.info("decision service serving gRPC on %s:%d", settings.host, settings.grpc_port)
    try:
        await audit.run(stop)
    finally:
        await grpc_server.stop()
        await audit.flush()
