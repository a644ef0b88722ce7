"""A grpc.aio server with the standard health checking, reflection and telemetry every
service exposes.

Every server gets two interceptors: OpenTelemetry's, which continues the caller's trace
(`traceparent` metadata) in a SERVER span per call, and one that records
rpc.server.call.duration by full method and status name. Health checks and reflection are
timed but not traced (probes would bury the traces worth reading).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from civicmeter.core.telemetry.metrics import rpc_server_duration

_UNTRACED = (health.SERVICE_NAME, reflection.SERVICE_NAME)


@dataclass(frozen=True)
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Report NOT_SERVING first so load balancers drain, then let calls finish."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_seconds)


def new_server(
    service_names: Sequence[str],
    *,
    max_message_bytes: int = 4 * 1024 * 1024,
    reflection_enabled: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> GrpcServer:
    """A server with health and (optionally) reflection; callers add their servicers and ports."""
    server = grpc.aio.server(
        interceptors=[*telemetry_interceptors(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_enabled:
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
    return GrpcServer(server, health_servicer, tuple(service_names))


def telemetry_interceptors(
    meter: metrics.Meter | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The tracing and duration interceptors, on the global providers unless given a meter."""
    return [
        aio_server_interceptor(filter_=_traced),  # type: ignore[no-untyped-call]
        CallDurationInterceptor(meter or metrics.get_meter("civicmeter.grpc")),
    ]


def _traced(details: grpc.HandlerCallDetails) -> bool:
    return not str(details.method).lstrip("/").startswith(_UNTRACED)


class CallDurationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """rpc.server.call.duration of every call, with its status code's name."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._duration = rpc_server_duration(meter)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.timed(str(handler_call_details.method), handler)

    def timed(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` with its calls timed: what the interception does per call, done once by a
        server that wraps its handlers at start-up instead (query.decision_server)."""
        if handler.response_streaming:
            behavior = handler.unary_stream or handler.stream_stream
            wrapped: Any = self._streaming(behavior, method)
        else:
            behavior = handler.unary_unary or handler.stream_unary
            wrapped = self._unary(behavior, method)
        if handler.request_streaming and handler.response_streaming:
            factory: Any = grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            factory = grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            factory = grpc.unary_stream_rpc_method_handler
        else:
            factory = grpc.unary_unary_rpc_method_handler
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, behavior: Any, method: str) -> Any:
        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._timing(method, context):
                return await behavior(request, context)

        return timed

    def _streaming(self, behavior: Any, method: str) -> Any:
        async def timed(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with self._timing(method, context):
                async for response in behavior(request, context):
                    yield response

        return timed

    @contextlib.contextmanager
    def _timing(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        started = time.perf_counter()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self._record(method, context, failed, time.perf_counter() - started)

    def _record(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        failed: bool,
        seconds: float,
    ) -> None:
        # An abort sets the code before raising; any other exception is answered UNKNOWN.
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        self._duration.record(
            seconds,
            {
                "rpc.system": "grpc",
                "rpc.method": method,
                "rpc.grpc.status_code": _status_name(code),
            },
        )


def _status_name(code: grpc.StatusCode | int) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for status in grpc.StatusCode:  # an aio context may give the number
        if status.value[0] == code:
            return str(status.name)
    return "UNKNOWN"
