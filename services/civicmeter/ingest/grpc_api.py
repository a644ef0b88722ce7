"""gRPC front of ingest: civicmeter.ingest.v1.IngestService, with health and reflection."""

from __future__ import annotations

import grpc

from civicmeter.core.grpc_server import GrpcServer, new_server
from civicmeter.ingest.auth import GatewayAccess, GrpcAuthentication
from civicmeter.ingest.publisher import BatchRejectedError, BatchTooLargeError, Publisher
from civicmeter.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc

SERVICE_NAME = ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name


class IngestService(ingest_grpc.IngestServiceServicer):
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def PublishEvents(  # noqa: N802 (gRPC method name)
        self, request: ingest_pb.PublishEventsRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb.PublishEventsResponse:
        try:
            accepted = await self._publisher.publish(list(request.events))
        except BatchRejectedError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BatchTooLargeError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return ingest_pb.PublishEventsResponse(accepted_count=accepted)


def build_grpc_server(
    publisher: Publisher,
    address: str,
    access: GatewayAccess | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> GrpcServer:
    grpc_server = new_server(
        [SERVICE_NAME],
        max_message_bytes=publisher.settings.max_body_bytes,
        interceptors=[GrpcAuthentication(access, f"/{SERVICE_NAME}/")] if access else [],
    )
    ingest_grpc.add_IngestServiceServicer_to_server(IngestService(publisher), grpc_server.server)
    if credentials is None:
        grpc_server.server.add_insecure_port(address)
    else:
        grpc_server.server.add_secure_port(address, credentials)
    return grpc_server
