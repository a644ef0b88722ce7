"""A grpc.aio server with the standard health checking and reflection every service exposes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


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
        interceptors=list(interceptors),
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
