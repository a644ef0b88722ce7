"""OpenTelemetry trace exports in: each GenAI span becomes one usage event.

AI gateways that already emit OpenTelemetry GenAI spans (LiteLLM's `otel` callback, Kong AI
Gateway, Envoy AI Gateway) export them to ingest unchanged: OTLP/HTTP at `/v1/traces`
(protobuf or JSON) or OTLP/gRPC `TraceService/Export` (the fronts are in http_api and
grpc_api). A span is a GenAI span when it carries `gen_ai.operation.name`; other spans are
ignored and counted (`civicmeter.ingest.otlp.spans` by outcome).

Quantities. The semantic conventions count cached input inside `gen_ai.usage.input_tokens`
and reasoning inside `gen_ai.usage.output_tokens`; civicmeter's Usage keeps them apart (its
input_tokens exclude both cache reads and cache writes, its output_tokens exclude reasoning),
so they are subtracted, and every token is billed once at its own price:

    input_tokens                = input_tokens - cache_read.input_tokens
                                  - cache_creation.input_tokens
    cache_read_input_tokens     = cache_read.input_tokens
    cache_creation_input_tokens = cache_creation.input_tokens
    output_tokens               = output_tokens - reasoning.output_tokens
    reasoning_tokens            = reasoning.output_tokens

(`prompt_tokens` / `completion_tokens` stand in for input / output, `gen_ai.system` for
`gen_ai.provider.name`.) Agent and tool spans (`invoke_agent`, `create_agent`,
`execute_tool`) are ignored: an agent span reports the sum of its model calls, each of which
has its own span, so billing it would count the tokens twice. A GenAI span with no token
counts is ignored too (nothing to bill).

Identity. The event id is `otlp-<trace id>-<span id>` (hex), so a re-exported span is counted
once. The organisation comes from the credential: a gateway key bound to one organisation
gives it (a span naming another is refused); a key bound to several (or to every one) takes
it from the organisation attribute, which must be among them. Department, user, gateway and
the rest come from span attributes, else resource attributes, under the names of
`AttributeMapping` (configurable: CIVICMETER_OTLP_ATTRIBUTES). The user attribute must hold
the pseudonym of the gateway SDK's `pseudonymise_user`; ingest never sees a real name.

Refusals never fail the export: spans that cannot become valid events are counted in the
OTLP partial-success answer (`rejected_spans`, and an `error_message` naming each span and
attribute); only an undecodable body is an error (HTTP 400 / INVALID_ARGUMENT).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from opentelemetry import metrics
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import Principal
from civicmeter.core.config import ConfigError
from civicmeter.core.events.validation import TimeWindow, ValidationError, validate_event
from civicmeter.ingest.publisher import BatchRejectedError, Publisher

GEN_AI_OPERATION = "gen_ai.operation.name"
# Operations whose spans aggregate or carry no model call of their own: never billed.
NOT_BILLED_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool"})
MAX_REPORTED_REFUSALS = 20  # spans named in a partial-success message
_ACCOUNT_KINDS = {
    "organizational": pb.ACCOUNT_KIND_ORGANIZATIONAL,
    "personal": pb.ACCOUNT_KIND_PERSONAL,
}


class UndecodableExportError(ValueError):
    """The body is not an ExportTraceServiceRequest; the message says why, without internals."""


@dataclass(frozen=True)
class AttributeMapping:
    """Which span or resource attributes give each field of the event, tried in order.

    CIVICMETER_OTLP_ATTRIBUTES overrides any of them: `field=attr1|attr2,field=attr`, e.g.
    `department=team.name|k8s.namespace.name,user=enduser.pseudo.id`. A span attribute wins
    over a resource attribute of the same name.
    """

    organization: tuple[str, ...] = ("civicmeter.organization_id",)
    department: tuple[str, ...] = ("civicmeter.department_id",)
    user: tuple[str, ...] = ("civicmeter.user_id", "enduser.pseudo.id")
    # Not service.instance.id: SDKs fill it with a random id per process.
    gateway: tuple[str, ...] = ("civicmeter.gateway_id", "service.name")
    service: tuple[str, ...] = ("civicmeter.service_id",)
    account_kind: tuple[str, ...] = ("civicmeter.account_kind",)
    purpose: tuple[str, ...] = ("civicmeter.purpose",)
    # When no attribute gives a department, this one (empty: the span is refused).
    default_department: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AttributeMapping:
        mapping = cls(default_department=env.get("CIVICMETER_OTLP_DEFAULT_DEPARTMENT", ""))
        spec = env.get("CIVICMETER_OTLP_ATTRIBUTES", "").strip()
        if not spec:
            return mapping
        changes: dict[str, tuple[str, ...]] = {}
        for item in spec.split(","):
            name, _, attributes = item.partition("=")
            name = name.strip()
            if name not in _MAPPED_FIELDS or not attributes.strip():
                raise ConfigError(
                    f"CIVICMETER_OTLP_ATTRIBUTES: {item.strip()!r} is not field=attribute|...;"
                    f" fields: {', '.join(sorted(_MAPPED_FIELDS))}"
                )
            changes[name] = tuple(a.strip() for a in attributes.split("|") if a.strip())
        return replace(mapping, **changes)  # type: ignore[arg-type]


_MAPPED_FIELDS = frozenset(
    {"organization", "department", "user", "gateway", "service", "account_kind", "purpose"}
)


@dataclass
class Conversion:
    """The outcome of one export request: events to publish and spans refused, by reason."""

    events: list[pb.UsageEvent] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # "span <trace>/<span>: <why>"
    ignored_not_genai: int = 0
    ignored_not_billed: int = 0

    def partial_success(self) -> otlp.ExportTracePartialSuccess | None:
        if not self.refusals:
            return None
        shown = self.refusals[:MAX_REPORTED_REFUSALS]
        more = len(self.refusals) - len(shown)
        message = "; ".join(shown) + (f"; and {more} more" if more else "")
        return otlp.ExportTracePartialSuccess(
            rejected_spans=len(self.refusals), error_message=f"refused: {message}"
        )

    def response(self) -> otlp.ExportTraceServiceResponse:
        partial = self.partial_success()
        if partial is None:
            return otlp.ExportTraceServiceResponse()
        return otlp.ExportTraceServiceResponse(partial_success=partial)


class SpanRefusedError(ValueError):
    pass


class OtlpReceiver:
    """Turns trace exports into usage events for one ingest (both fronts share it)."""

    def __init__(
        self,
        mapping: AttributeMapping,
        meter: metrics.Meter,
        time_window: TimeWindow = TimeWindow(),
        max_body_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.mapping = mapping
        self._window = time_window
        self.max_body_bytes = max_body_bytes
        self._spans = meter.create_counter(
            "civicmeter.ingest.otlp.spans",
            unit="{span}",
            description="Spans received over OTLP, by outcome "
            "(event, refused, not_genai, not_billed)",
        )

    def count(self, conversion: Conversion) -> None:
        for outcome, count in (
            ("event", len(conversion.events)),
            ("refused", len(conversion.refusals)),
            ("not_genai", conversion.ignored_not_genai),
            ("not_billed", conversion.ignored_not_billed),
        ):
            if count:
                self._spans.add(count, {"outcome": outcome})

    async def export(
        self, request: otlp.ExportTraceServiceRequest, principal: Principal, publisher: Publisher
    ) -> otlp.ExportTraceServiceResponse:
        """Publish the request's usage events (PublishUnavailableError: Kafka is down, the
        exporter should retry) and answer with the spans refused."""
        conversion = self.convert(request, principal)
        step = publisher.settings.max_batch_events
        for start in range(0, len(conversion.events), step):
            chunk = conversion.events[start : start + step]
            try:
                await publisher.publish(chunk)
            except BatchRejectedError as exc:  # validated above; kept for a rule added later
                conversion.refusals += [
                    f"event {chunk[e.index].event_id}: {e.field}: {e.message}" for e in exc.errors
                ]
                conversion.events = [e for e in conversion.events if e not in chunk]
        self.count(conversion)
        return conversion.response()

    def convert(self, request: otlp.ExportTraceServiceRequest, principal: Principal) -> Conversion:
        """Events for the GenAI spans of the request, each checked against the rules ingest
        applies to any event and against what the caller's key may report."""
        conversion = Conversion()
        now = datetime.now(UTC)
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = _attributes(span.attributes)
                    operation = attributes.get(GEN_AI_OPERATION)
                    if operation is None:
                        conversion.ignored_not_genai += 1
                        continue
                    if operation.string_value in NOT_BILLED_OPERATIONS:
                        conversion.ignored_not_billed += 1
                        continue
                    name = f"span {span.trace_id.hex()}/{span.span_id.hex()}"
                    try:
                        event = self._event(span, attributes, resource, principal, now)
                    except SpanRefusedError as exc:
                        conversion.refusals.append(f"{name}: {exc}")
                        continue
                    if event is None:
                        conversion.ignored_not_billed += 1
                    else:
                        conversion.events.append(event)
        return conversion

    def _event(
        self,
        span: trace_pb2.Span,
        attributes: Mapping[str, common_pb2.AnyValue],
        resource: Mapping[str, common_pb2.AnyValue],
        principal: Principal,
        now: datetime,
    ) -> pb.UsageEvent | None:
        lookup = _Lookup(attributes, resource)
        usage = _usage(lookup)
        if usage is None:
            return None  # a GenAI span without token counts: nothing to bill
        if len(span.trace_id) != 16 or len(span.span_id) != 8:
            raise SpanRefusedError("trace_id and span_id must be 16 and 8 bytes")
        m = self.mapping
        organization = _organization(lookup, m.organization, principal)
        provider, provider_attr = lookup.first(("gen_ai.provider.name", "gen_ai.system"))
        model, model_attr = lookup.first(("gen_ai.request.model", "gen_ai.response.model"))
        service, service_attr = lookup.first(m.service)
        department, department_attr = lookup.first(m.department)
        user, user_attr = lookup.first(m.user)
        gateway, gateway_attr = lookup.first(m.gateway)
        kind_name, kind_attr = lookup.first(m.account_kind)
        purpose, purpose_attr = lookup.first(m.purpose)
        kind = _ACCOUNT_KINDS.get(kind_name or "organizational")
        if kind is None:
            raise SpanRefusedError(f"{kind_attr} must be organizational or personal")
        event = pb.UsageEvent(
            event_id=f"otlp-{span.trace_id.hex()}-{span.span_id.hex()}",
            gateway_id=gateway or "",
            organization_id=organization,
            department_id=department or m.default_department,
            user_id=user or "",
            account_kind=kind,
            provider_name=provider or "",
            # Without a service attribute, the provider's API (the catalog's `openai-api`).
            service_id=service or (f"{provider}-api" if provider else ""),
            request_model=model or "",
            operation_name=lookup.first((GEN_AI_OPERATION,))[0] or "",
            purpose=purpose or "",
            usage=usage,
        )
        event.event_time.FromNanoseconds(span.start_time_unix_nano)
        if not principal.reports_as(event.gateway_id):
            raise SpanRefusedError(
                f"{gateway_attr or m.gateway[0]}: key {principal.key_id!r} may not report as "
                f"gateway {event.gateway_id[:64]!r}"
            )
        # Validation errors name the attribute the value came from, not the event's field.
        names = {
            "gateway_id": gateway_attr or " or ".join(m.gateway),
            "department_id": department_attr or " or ".join(m.department),
            "user_id": user_attr or " or ".join(m.user),
            "provider_name": provider_attr or "gen_ai.provider.name",
            "service_id": service_attr or " or ".join(m.service),
            "request_model": model_attr or "gen_ai.request.model",
            "operation_name": GEN_AI_OPERATION,
            "purpose": purpose_attr or m.purpose[0],
            "event_time": "start_time_unix_nano",
        }
        try:
            validate_event(event, now, self._window)
        except ValidationError as exc:
            head = exc.field.split(".", 1)[0]
            raise SpanRefusedError(f"{names.get(head, exc.field)}: {exc.message}") from None
        return event


class _Lookup:
    """Attribute values by name: the span's first, then the resource's."""

    def __init__(
        self,
        span: Mapping[str, common_pb2.AnyValue],
        resource: Mapping[str, common_pb2.AnyValue],
    ) -> None:
        self._span = span
        self._resource = resource

    def value(self, name: str) -> common_pb2.AnyValue | None:
        value = self._span.get(name)
        return value if value is not None else self._resource.get(name)

    def first(self, names: Sequence[str]) -> tuple[str | None, str | None]:
        """The first of these attributes present, as a string, and its name."""
        for name in names:
            value = self.value(name)
            if value is not None:
                if value.WhichOneof("value") != "string_value":
                    raise SpanRefusedError(f"{name} must be a string")
                return value.string_value, name
        return None, None

    def count(self, *names: str) -> int | None:
        """A token count (the first of these attributes present), or None when absent."""
        for name in names:
            value = self.value(name)
            if value is None:
                continue
            kind = value.WhichOneof("value")
            if kind == "int_value":
                number = value.int_value
            elif kind == "double_value" and value.double_value.is_integer():
                number = int(value.double_value)
            elif kind == "string_value" and value.string_value.lstrip("-").isdigit():
                number = int(value.string_value)
            else:
                raise SpanRefusedError(f"{name} must be an integer")
            if number < 0:
                raise SpanRefusedError(f"{name} must not be negative, got {number}")
            return number
        return None


def _usage(lookup: _Lookup) -> pb.Usage | None:
    """The span's tokens split as civicmeter bills them (module docstring); None: no tokens."""
    total_in = lookup.count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    total_out = lookup.count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    cache_read = lookup.count("gen_ai.usage.cache_read.input_tokens") or 0
    cache_write = lookup.count("gen_ai.usage.cache_creation.input_tokens") or 0
    reasoning = lookup.count("gen_ai.usage.reasoning.output_tokens") or 0
    if total_in is None and total_out is None and not (cache_read or cache_write or reasoning):
        return None
    fresh_in = (total_in or 0) - cache_read - cache_write
    if fresh_in < 0:
        raise SpanRefusedError(
            "gen_ai.usage.input_tokens must include the cache_read and cache_creation input "
            f"tokens ({total_in or 0} < {cache_read} + {cache_write})"
        )
    plain_out = (total_out or 0) - reasoning
    if plain_out < 0:
        raise SpanRefusedError(
            "gen_ai.usage.output_tokens must include the reasoning output tokens "
            f"({total_out or 0} < {reasoning})"
        )
    return pb.Usage(
        input_tokens=fresh_in,
        output_tokens=plain_out,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def _organization(lookup: _Lookup, names: Sequence[str], principal: Principal) -> str:
    named, attribute = lookup.first(names)
    if not principal.sees_every_organization and "," not in principal.organization_id:
        if named is not None and named != principal.organization_id:
            raise SpanRefusedError(
                f"{attribute}: key {principal.key_id!r} may not report usage for "
                f"organisation {named[:64]!r}"
            )
        return principal.organization_id
    if named is None:
        raise SpanRefusedError(
            f"no organisation: key {principal.key_id!r} reports for several, so the span or "
            f"its resource must name one in {' or '.join(names)}"
        )
    if not principal.reports_for(named):
        raise SpanRefusedError(
            f"{attribute}: key {principal.key_id!r} may not report usage for organisation "
            f"{named[:64]!r}"
        )
    return named


def _attributes(pairs: Sequence[common_pb2.KeyValue]) -> dict[str, common_pb2.AnyValue]:
    return {pair.key: pair.value for pair in pairs}


# --- decoding -------------------------------------------------------------------------------


def parse_protobuf(body: bytes) -> otlp.ExportTraceServiceRequest:
    request = otlp.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except ProtoDecodeError:
        raise UndecodableExportError(
            "the body is not an opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
            " in protobuf"
        ) from None
    return request


def parse_json(body: bytes) -> otlp.ExportTraceServiceRequest:
    """OTLP/JSON: protobuf's JSON mapping, except that trace and span ids are hex strings."""
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not an object")
        for span in _json_spans(document):
            for key in ("traceId", "spanId", "parentSpanId"):
                value = span.get(key)
                if isinstance(value, str):
                    span[key] = base64.b64encode(bytes.fromhex(value)).decode()
        return json_format.ParseDict(
            document, otlp.ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except (ValueError, TypeError, RecursionError, json_format.ParseError):
        raise UndecodableExportError(
            "the body is not an ExportTraceServiceRequest in OTLP/JSON"
        ) from None


def _json_spans(document: dict[str, object]) -> Iterator[dict[str, object]]:
    for resource_spans in _objects(document.get("resourceSpans")):
        for scope_spans in _objects(resource_spans.get("scopeSpans")):
            yield from _objects(scope_spans.get("spans"))


def _objects(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def response_json(response: otlp.ExportTraceServiceResponse) -> bytes:
    return json_format.MessageToJson(response, indent=None).encode()
