"""HTTP front of ingest: POST /v1/events with a batch of usage CloudEvents.

Content types: application/cloudevents-batch+json or application/json (a JSON array),
application/cloudevents+json (one event), application/x-protobuf (a PublishEventsRequest);
optionally compressed (Content-Encoding gzip or deflate). A request with a `ce-specversion`
header is one CloudEvent in binary content mode: its attributes in `ce-*` headers, its data
the body, in JSON or protobuf (a civicmeter.usage.v1.UsageEvent) as its Content-Type says.
Errors about CloudEvents name their attributes (`source`, `time`, `data.usage...`).
Answers 202 {"accepted_count": n} once every event is durable in Kafka; 400 with the
offending events and fields ("body" when the body does not decode); 413 when the body
(decompressed) or the batch is too large; 415 for other content types and encodings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.rpc.status_pb2 import Status

from civicmeter.api.event_json import (
    PROTOBUF_DATA_TYPES,
    DecodeError,
    cloudevent_field,
    decode_batch,
    decode_binary,
)
from civicmeter.ingest.auth import (
    GATEWAY_ACCESS,
    GatewayAccess,
    http_authentication,
    refuse_foreign_events,
    request_principal,
)
from civicmeter.ingest.decoding import parse_publish_request
from civicmeter.ingest.otlp import (
    OtlpReceiver,
    UndecodableExportError,
    parse_json,
    parse_protobuf,
    response_json,
)
from civicmeter.ingest.publisher import (
    BatchRejectedError,
    BatchTooLargeError,
    Publisher,
    PublishUnavailableError,
)

JSON_TYPES = frozenset(
    {"application/json", "application/cloudevents-batch+json", "application/cloudevents+json"}
)
PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
# Content-Encoding values aiohttp decompresses (an unknown one would pass through undecoded).
ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate"})

PUBLISHER = web.AppKey("publisher", Publisher)
OTLP = web.AppKey("otlp", OtlpReceiver)
_ECHO_CHARS = 64  # request values quoted back in an error are cut to this length


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def publish_events(request: web.Request) -> web.Response:
    publisher = request.app[PUBLISHER]
    received = datetime.now(UTC)
    content_type = request.content_type
    binary = "ce-specversion" in request.headers  # CloudEvents binary content mode
    if binary and "Content-Type" not in request.headers:
        content_type = "application/json"  # JSON data, as a CloudEvent without datacontenttype
    if binary and not _binary_data_type(content_type):
        return _error(
            415,
            f"unsupported datacontenttype {content_type[:_ECHO_CHARS]!r} for a binary-mode "
            "CloudEvent; use application/json or application/protobuf",
        )
    if not binary and content_type not in JSON_TYPES | PROTOBUF_TYPES:
        return _error(
            415,
            f"unsupported content type {content_type[:_ECHO_CHARS]!r}; use one of "
            f"{', '.join(sorted(JSON_TYPES | PROTOBUF_TYPES))}",
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ENCODINGS:
        return _error(
            415,
            f"unsupported content encoding {encoding[:_ECHO_CHARS]!r}; use one of "
            f"{', '.join(sorted(ENCODINGS))}",
        )
    try:
        body = await request.read()  # at most max_body_bytes, decompressed
    except web.HTTPRequestEntityTooLarge:
        publisher.count_rejected(1, "too_large")
        return _error(413, f"the body exceeds {publisher.settings.max_body_bytes} bytes")
    except web.RequestPayloadError:  # truncated, or not in its Content-Encoding
        publisher.count_rejected(1, "undecodable")
        fault = f"the body cannot be read as {encoding}"
        return _error(400, fault, errors=[{"index": None, "field": "body", "message": fault}])
    cloud_events = binary or content_type in JSON_TYPES
    encoded = None  # the events' encodings, when the body is them
    try:
        if binary:
            events = [decode_binary(request.headers, content_type, body, received)]
        elif content_type in PROTOBUF_TYPES:
            decoded = parse_publish_request(body)
            publisher.count_unknown_fields(decoded.unknown_field_events, "http")
            events, encoded = list(decoded.events), decoded.encoded
        else:
            events = decode_batch(body, received)
    except DecodeError as exc:  # JSON or protobuf (UndecodableRequestError)
        publisher.count_rejected(1, "undecodable")
        error = {"index": exc.index, "field": exc.field, "message": exc.message}
        return _error(400, f"cannot decode the batch: {exc}", errors=[error])
    naming = cloudevent_field if cloud_events else str
    if (refused := refuse_foreign_events(request, events, naming)) is not None:
        return refused
    try:
        accepted = await publisher.publish(events, encoded)
    except BatchRejectedError as exc:
        if cloud_events:
            return _cloud_events_rejected(exc)
        return _error(
            400,
            str(exc),
            errors=[{"index": e.index, "field": e.field, "message": e.message} for e in exc.errors],
        )
    except BatchTooLargeError as exc:
        return _error(413, str(exc))
    except PublishUnavailableError as exc:
        response = _error(503, str(exc))
        response.headers["Retry-After"] = "5"
        return response
    return web.json_response({"accepted_count": accepted}, status=202)


def _binary_data_type(content_type: str) -> bool:
    """JSON or protobuf data; a binary-mode event's data is never a CloudEvent itself."""
    if content_type in PROTOBUF_DATA_TYPES or content_type == "application/json":
        return True
    return content_type.endswith("+json") and not content_type.startswith("application/cloudevents")


def _cloud_events_rejected(exc: BatchRejectedError) -> web.Response:
    """400 naming CloudEvents attributes: `events[2].source`, not the internal gateway_id."""
    errors = [
        {"index": e.index, "field": cloudevent_field(e.field), "message": e.message}
        for e in exc.errors
    ]
    first = errors[0]
    more = exc.invalid_count - 1
    return _error(
        400,
        f"{exc.invalid_count} invalid event(s); first: events[{first['index']}]."
        f"{first['field']}: {first['message']}" + (f" (and {more} more)" if more else ""),
        errors=errors,
    )


async def export_traces(request: web.Request) -> web.Response:
    """OTLP/HTTP trace export (protobuf or JSON): 200 with the spans refused as a partial
    success; 400 with a google.rpc.Status for an undecodable body; 503 to retry when Kafka is
    unavailable (the exporter retries; span ids keep the events counted once)."""
    publisher, receiver = request.app[PUBLISHER], request.app[OTLP]
    as_json = request.content_type == "application/json"
    if not as_json and request.content_type not in PROTOBUF_TYPES:
        return _otlp_status(415, "use application/x-protobuf or application/json", as_json=True)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _otlp_status(
            413, f"the body exceeds {publisher.settings.max_body_bytes} bytes", as_json
        )
    except web.RequestPayloadError:
        return _otlp_status(400, "the body cannot be read in its Content-Encoding", as_json)
    try:
        export = parse_json(body) if as_json else parse_protobuf(body)
    except UndecodableExportError as exc:
        publisher.count_rejected(1, "undecodable")
        return _otlp_status(400, str(exc), as_json)
    try:
        answer = await receiver.export(export, request_principal(request), publisher)
    except PublishUnavailableError as exc:
        response = _otlp_status(503, str(exc), as_json)
        response.headers["Retry-After"] = "5"
        return response
    if as_json:
        return web.Response(body=response_json(answer), content_type="application/json")
    return web.Response(body=answer.SerializeToString(), content_type="application/x-protobuf")


def _otlp_status(status: int, message: str, as_json: bool) -> web.Response:
    """An OTLP/HTTP error: a google.rpc.Status in the request's encoding."""
    rpc_status = Status(code=_RPC_CODES.get(status, 2), message=message)
    if as_json:
        return web.Response(
            status=status, body=json_format.MessageToJson(rpc_status, indent=None).encode(),
            content_type="application/json",
        )  # fmt: skip
    return web.Response(
        status=status, body=rpc_status.SerializeToString(), content_type="application/x-protobuf"
    )


# google.rpc.Code for the HTTP statuses OTLP answers with.
_RPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_http_app(
    publisher: Publisher, access: GatewayAccess | None = None, otlp: OtlpReceiver | None = None
) -> web.Application:
    app = web.Application(
        client_max_size=publisher.settings.max_body_bytes, middlewares=[http_authentication]
    )
    app[PUBLISHER] = publisher
    if otlp is not None:
        app[OTLP] = otlp
        app.router.add_post("/v1/traces", export_traces)
    if access is not None:
        app[GATEWAY_ACCESS] = access
    app.router.add_post("/v1/events", publish_events)
    app.router.add_get("/healthz", healthz)
    return app
