"""gRPC front of ingest: civicmeter.ingest.v1.IngestService, with health and reflection.

Requests are decoded by the service rather than by gRPC, so an undecodable body gets
INVALID_ARGUMENT naming it (gRPC's own decoding would answer UNKNOWN), and fields the schema
does not define are dropped and counted before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp_pb

from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.core.grpc_server import GrpcServer, new_server
from civicmeter.ingest.auth import GatewayAccess, GrpcAuthentication, admit_grpc_call
from civicmeter.ingest.decoding import (
    DecodedRequest,
    UndecodableRequestError,
    parse_publish_request,
)
from civicmeter.ingest.otlp import OtlpReceiver, UndecodableExportError, parse_protobuf
from civicmeter.ingest.publisher import (
    BatchRejectedError,
    BatchTooLargeError,
    Publisher,
    PublishUnavailableError,
)

SERVICE_NAME = ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name
OTLP_SERVICE_NAME = otlp_pb.DESCRIPTOR.services_by_name["TraceService"].full_name


@dataclass(frozen=True)
class UndecodableRequest:
    """What the handler receives for a body that does not decode. It has no events, so
    whatever inspects requests before the handler (authentication) sees an empty batch."""

    message: str
    events: tuple[()] = ()


class IngestService:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def decode(self, body: bytes) -> DecodedRequest | UndecodableRequest:
        """The request deserializer: never raises, so the handler can answer for the body."""
        try:
            request = parse_publish_request(body)
        except UndecodableRequestError as exc:
            return UndecodableRequest(str(exc))
        self._publisher.count_unknown_fields(request.unknown_field_events, "grpc")
        return request

    async def PublishEvents(  # noqa: N802 (gRPC method name)
        self,
        request: DecodedRequest | UndecodableRequest,
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb.PublishEventsResponse:
        if isinstance(request, UndecodableRequest):
            self._publisher.count_rejected(1, "undecodable")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"body: {request.message}")
            raise AssertionError("abort raises")
        try:
            accepted = await self._publisher.publish(list(request.events), request.encoded)
        except BatchRejectedError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BatchTooLargeError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except PublishUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return ingest_pb.PublishEventsResponse(accepted_count=accepted)

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {
            "PublishEvents": grpc.unary_unary_rpc_method_handler(
                self.PublishEvents,
                request_deserializer=self.decode,
                response_serializer=ingest_pb.PublishEventsResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(SERVICE_NAME, handlers)


class OtlpTraceService:
    """opentelemetry.proto.collector.trace.v1.TraceService: OTLP/gRPC trace exports. The
    handler authenticates (the requests carry no usage events for the interceptor to check)."""

    def __init__(
        self, receiver: OtlpReceiver, publisher: Publisher, access: GatewayAccess | None
    ) -> None:
        self._receiver = receiver
        self._publisher = publisher
        self._access = access

    @staticmethod
    def decode(body: bytes) -> otlp_pb.ExportTraceServiceRequest | UndecodableRequest:
        try:
            return parse_protobuf(body)
        except UndecodableExportError as exc:
            return UndecodableRequest(str(exc))

    async def Export(  # noqa: N802 (gRPC method name)
        self,
        request: otlp_pb.ExportTraceServiceRequest | UndecodableRequest,
        context: grpc.aio.ServicerContext,
    ) -> otlp_pb.ExportTraceServiceResponse:
        principal = await admit_grpc_call(self._access, context)
        if isinstance(request, UndecodableRequest):
            self._publisher.count_rejected(1, "undecodable")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"body: {request.message}")
            raise AssertionError("abort raises")
        try:
            return await self._receiver.export(request, principal, self._publisher)
        except PublishUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Export": grpc.unary_unary_rpc_method_handler(
                self.Export,
                request_deserializer=self.decode,
                response_serializer=otlp_pb.ExportTraceServiceResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(OTLP_SERVICE_NAME, handlers),)
        )
        server.add_registered_method_handlers(OTLP_SERVICE_NAME, handlers)


def build_grpc_server(
    publisher: Publisher,
    address: str,
    access: GatewayAccess | None = None,
    credentials: grpc.ServerCredentials | None = None,
    otlp: OtlpReceiver | None = None,
) -> GrpcServer:
    grpc_server = new_server(
        [SERVICE_NAME, *([OTLP_SERVICE_NAME] if otlp else [])],
        max_message_bytes=publisher.settings.max_body_bytes,
        interceptors=[GrpcAuthentication(access, f"/{SERVICE_NAME}/")] if access else [],
    )
    IngestService(publisher).add_to(grpc_server.server)
    if otlp is not None:
        OtlpTraceService(otlp, publisher, access).add_to(grpc_server.server)
    if credentials is None:
        grpc_server.server.add_insecure_port(address)
    else:
        grpc_server.server.add_secure_port(address, credentials)
    return grpc_server
