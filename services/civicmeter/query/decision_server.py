"""The decision service in a process of its own: `civicmeter decision` (or `civicmeter serve
decision` beside other services), on its own port (CIVICMETER_DECISION_GRPC_PORT, 50053).

A gateway's `Decide` waits on this process alone, so the query service's ClickHouse work
(breakdowns, exports, its cache refreshes) never delays a decision. Everything else is the
query service's: the same API keys, roles, audit log, TLS settings and policy file
(QuerySettings from the environment), the same decisions (query.decision_service.Decisions),
health checking and reflection; only the per-key rate limit is its own
(CIVICMETER_DECISION_RATE_PER_KEY). The query service still serves DecisionService on its own
port too (on grpc.aio), for gateways configured before this process existed.

The server is gRPC's thread-pool server (grpc.server), not grpc.aio: measured side by side at
1,000 calls/s on a shared two-core machine its bare transport had the shorter tail and cost
less CPU per call (loadtests/guard/RESULTS.md). Unary calls (Decide, health checks) are
answered by DECIDE_WORKERS threads, and wait for one in arrival order. Streams run on a pool of
their own (gRPC's per-method pool), one thread each: a `WatchPolicy` stream holds its thread
for its whole life (asleep between messages), so at most `max_watchers`
(CIVICMETER_DECISION_MAX_WATCHERS) run at once and one more is refused with
RESOURCE_EXHAUSTED; reflection streams likewise, at most MAX_REFLECTION_STREAMS. Streams
therefore never take a call's thread, and calls never take the streams' idle ones: with one
pool for both, every call arriving while the call threads were busy started a thread of its
own (measured: up to 112 threads after a pause of the process, each call of a backlog
sharing the GIL with all the others and answered late, rather than the first ones first).
Health's Watch does not hold a thread (the servicer answers it from callbacks).

One process answers on one core: CIVICMETER_DECISION_PROCESSES runs several on the same port
(query.decision_processes), each built here, sharing one storage process.

The call path holds no I/O: the policy in memory (reloaded when its file changes), the budget
state read by a thread of its own in the background (at most 2 s old; an organisation's first
call waits for its first read), the audit row appended to a bounded in-memory queue that a task
on the process's event loop writes in batches (query.access.AuditLog). Run alone (`civicmeter
decision`), the process does its ClickHouse work (the audit batches, the budget reads, the
migrations) in a child process (core.store.storage_process): batches of rows turned into
columns, and on the embedded engine the engine itself, no longer take the GIL from the calls;
that process runs at idle priority, so its bursts (an insert or a budget read on every core for
tens of milliseconds) never keep a call's thread from a core. Served beside other services
(`civicmeter serve query decision`) it shares their storage. Process tuning for the tail,
measured in loadtests/guard/RESULTS.md:

- gc.freeze() once everything is loaded, before the first call: the modules, policy and
  server objects leave the collector's generations, so a full collection never walks them
  (the last full one, before the freeze, took 30-80 ms and ran under the first calls when it
  came after the server's start);
- Python's own GIL switch interval (5 ms): 0.5 ms, meant to let a call's thread in sooner
  while the audit writer held the GIL, gave the longer p99 in six of eight paired
  comparisons (four pairs of runs, ghz and the Python client) and more CPU per call in six
  of eight (more forced hand-offs between the call threads and gRPC's polling thread); the
  writer's part in this process is under a millisecond a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics

from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.core.access.auth import load_api_keys
from civicmeter.core.config import QuerySettings, env_float, env_int, env_port
from civicmeter.core.grpc_server import CallDurationInterceptor
from civicmeter.core.policy_source import PolicySource
from civicmeter.core.store.connection import StorageCalls
from civicmeter.core.store.migrations import migrate
from civicmeter.core.store.storage_process import StorageLink, StorageProcess
from civicmeter.query.access import AccessInterceptor, AuditLog, RateLimiter
from civicmeter.query.decision_service import SERVICE_NAME, ThreadedDecisionService
from civicmeter.query.server import server_credentials

log = logging.getLogger("civicmeter.decision")
DEFAULT_PORT = 50053
DEFAULT_RATE_PER_KEY = 5000.0  # calls/s of one gateway key (bursts of twice that)
DEFAULT_MAX_WATCHERS = 128  # WatchPolicy streams at once: one per running gateway
MAX_WATCHERS_BOUND = 4096  # threads are cheap asleep, not free
MAX_PROCESSES = 64
DECIDE_WORKERS = 4  # threads for unary calls: 1,000 decisions/s need about one busy
MAX_REFLECTION_STREAMS = 2  # grpcurl and the like, briefly
REFUSING_THREADS = 2  # stream threads beyond the limits: a stream over them is refused at once
MAX_REQUEST_BYTES = 64 * 1024  # a request is metadata and counts, never a prompt
REFLECTION_METHOD = f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"


@dataclass(frozen=True)
class DecisionSettings(QuerySettings):
    max_watchers: int = DEFAULT_MAX_WATCHERS
    processes: int = 1  # servers on the port (query.decision_processes)


def settings_from_env(env: Mapping[str, str]) -> DecisionSettings:
    """The query service's settings, on the decision service's host and port, with its own
    per-key rate limit (CIVICMETER_DECISION_RATE_PER_KEY): a gateway asks once per request;
    and how many gateways may follow the policy stream at once
    (CIVICMETER_DECISION_MAX_WATCHERS); and how many processes serve the port
    (CIVICMETER_DECISION_PROCESSES, query.decision_processes)."""
    settings = QuerySettings.from_env(env)
    port = env_port(env, "CIVICMETER_DECISION_GRPC_PORT", DEFAULT_PORT)
    rate = env_float(env, "CIVICMETER_DECISION_RATE_PER_KEY", DEFAULT_RATE_PER_KEY, 0)
    watchers = env_int(
        env, "CIVICMETER_DECISION_MAX_WATCHERS", DEFAULT_MAX_WATCHERS, 1, MAX_WATCHERS_BOUND
    )
    processes = env_int(env, "CIVICMETER_DECISION_PROCESSES", 1, 1, MAX_PROCESSES)
    host = env.get("CIVICMETER_DECISION_HOST", settings.host)
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return DecisionSettings(
        **{**fields, "host": host, "grpc_port": port, "rate_per_key": rate},
        max_watchers=watchers,
        processes=processes,
    )


@dataclass(frozen=True)
class ThreadPoolServer:
    """The thread-pool server with its health servicer, started and stopped from the process's
    event loop like the other services' grpc.aio servers."""

    server: grpc.Server
    health: health.HealthServicer
    service_names: tuple[str, ...]
    workers: int  # threads its pools may run (calls and streams)

    async def start(self) -> None:
        self.server.start()
        for name in ("", *self.service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Report NOT_SERVING first so load balancers drain, then let calls finish; streams
        still open after the grace period are cancelled (which wakes their threads)."""
        for name in ("", *self.service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        stopped = self.server.stop(grace_seconds)
        await asyncio.to_thread(stopped.wait)


def build_decision_server(
    settings: QuerySettings,
    storage: StorageCalls,
    audit: AuditLog | None = None,
    meter: metrics.Meter | None = None,
    max_watchers: int | None = None,
) -> ThreadPoolServer:
    """A thread-pool server with DecisionService, health and reflection, and no interceptor:
    each method is wrapped once with the query API's access checks and audit
    (AccessInterceptor.guard) and timed (rpc.server.call.duration). Decide is therefore not
    traced (1,000 spans a second would cost more than the decision); each call's status is in
    the audit log. `max_watchers`: the settings' (DecisionSettings) unless given."""
    if max_watchers is None:
        max_watchers = getattr(settings, "max_watchers", DEFAULT_MAX_WATCHERS)
    keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else None
    limiter = (
        RateLimiter(settings.rate_per_key, 2 * settings.rate_per_key)
        if settings.rate_per_key > 0
        else None
    )
    access = AccessInterceptor(keys, audit, limiter)
    # Unary calls queue for a few threads, in arrival order; streams have threads of their
    # own. One pool for both grows a thread per call waiting whenever the call threads are
    # busy (ThreadPoolExecutor starts one while none is idle): after a pause of the process,
    # a hundred threads sharing the GIL, every waiting call answered late instead of the
    # first ones first.
    calls = ThreadPoolExecutor(max_workers=DECIDE_WORKERS, thread_name_prefix="decision-call")
    stream_threads = max_watchers + MAX_REFLECTION_STREAMS + REFUSING_THREADS
    streams = ThreadPoolExecutor(max_workers=stream_threads, thread_name_prefix="decision-stream")
    workers = DECIDE_WORKERS + stream_threads
    options: list[tuple[str, int]] = [("grpc.max_receive_message_length", MAX_REQUEST_BYTES)]
    if getattr(settings, "processes", 1) > 1:  # the port is shared with the group's others
        options.append(("grpc.so_reuseport", 1))
    server = grpc.server(calls, options=options)
    policies = PolicySource(settings.policy_file)
    service = ThreadedDecisionService(storage, policies.current, max_watchers, audit=audit)
    timing = _ThreadedCallDuration(meter or metrics.get_meter("civicmeter.grpc"))
    handlers = _MethodHandlers()
    decision_grpc.add_DecisionServiceServicer_to_server(service, handlers)
    guarded = {
        name: _on_pool(streams, timing.timed(method, access.guard(method, h, threaded=True)))
        for name, h in handlers.methods.items()
        for method in (f"/{SERVICE_NAME}/{name}",)
    }
    _register(server, SERVICE_NAME, guarded)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflecting = _MethodHandlers()
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], reflecting
        )
        slots = _StreamSlots(MAX_REFLECTION_STREAMS, "reflection")
        _register(
            server,
            reflection.SERVICE_NAME,
            {name: _on_pool(streams, slots.bounded(h)) for name, h in reflecting.methods.items()},
        )
    address = f"{settings.host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, credentials)
    return ThreadPoolServer(server, health_servicer, (SERVICE_NAME,), workers)


def _on_pool(pool: ThreadPoolExecutor, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler`, run on `pool` instead of the server's call threads when it streams its
    responses (gRPC's per-method pool: the behaviour's `experimental_thread_pool`)."""
    if handler.response_streaming:
        behavior = handler.stream_stream or handler.unary_stream
        setattr(behavior, "experimental_thread_pool", pool)  # noqa: B010 (a function's attribute)
    return handler


def _register(server: grpc.Server, service: str, methods: dict[str, grpc.RpcMethodHandler]) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    server.add_registered_method_handlers(service, methods)


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


class _StreamSlots:
    """At most `limit` calls of streaming handlers at once, each holding a pool thread; one
    more is refused with RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int, what: str) -> None:
        self._free = threading.BoundedSemaphore(limit)
        self._refusal = f"{what}: at most {limit} streams at a time, all taken; retry with backoff"

    def bounded(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not handler.response_streaming:
            return handler
        inner = handler.stream_stream or handler.unary_stream
        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._free.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal)
            try:
                yield from inner(request, context)
            finally:
                self._free.release()

        return factory(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _ThreadedCallDuration(CallDurationInterceptor):
    """rpc.server.call.duration of calls served in pool threads: the same timing and
    attributes, around plain functions and generators instead of coroutines."""

    def _unary(self, behavior: Any, method: str) -> Any:
        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            with self._timing(method, context):
                return behavior(request, context)

        return timed

    def _streaming(self, behavior: Any, method: str) -> Any:
        def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._timing(method, context):
                yield from behavior(request, context)

        return timed


async def serve(settings: DecisionSettings, storage: StorageCalls, stop: asyncio.Event) -> None:
    await storage.run(migrate)
    audit = AuditLog(storage)
    grpc_server = build_decision_server(settings, storage, audit)
    gc.collect()
    gc.freeze()
    await grpc_server.start()
    log.info(
        "decision service serving gRPC on %s:%d (%d threads: %d for calls, the others for "
        "at most %d policy watchers)",
        settings.host,
        settings.grpc_port,
        grpc_server.workers,
        DECIDE_WORKERS,
        settings.max_watchers,
    )
    try:
        await audit.run(stop)
    finally:
        await grpc_server.stop()
        await audit.flush()
        if isinstance(storage, StorageProcess | StorageLink):
            await asyncio.to_thread(storage.close)
