"""The JSON mapping of the usage event: a CloudEvents 1.0 envelope around the event's data.

    {"specversion": "1.0", "id": "<event_id>", "source": "<gateway_id>",
     "type": "kr.civicmeter.usage.v1", "time": "2024-03-04T09:15:00+09:00",
     "datacontenttype": "application/json",
     "data": {"organization_id": "seoul", "department_id": "...", "user_id": "...",
              "account_kind": "organizational", "provider_name": "openai",
              "service_id": "chatgpt", "request_model": "gpt-4o", "operation_name": "chat",
              "usage": {"input_tokens": 812, "output_tokens": 95},
              "decision": "redact", "decision_rule_ids": ["pii.kr_rrn"]}}

`decision` (allow, allow_with_warning, redact, deny) and `decision_rule_ids` carry the gateway
guard's decision on the request; both are left out when no guard decided.

Decoding uses msgspec (strict types, unknown data fields rejected), so an error names the
path of the offending field, e.g. "Expected `int`, got `str` - at `$[3].data.usage.images`".
Integers are bounded by the range of their protobuf field, and times by the range of a
protobuf Timestamp, so whatever decodes also converts.

Every CloudEvents HTTP content mode is read: structured (one event), batch (a JSON array) and
binary (the attributes as `ce-*` headers, the data as the body; `decode_binary`). Besides:
- `time` may be left out: the event then happened when ingest received it;
- the data may be a protobuf civicmeter.usage.v1.UsageEvent instead of the JSON above, with
  `datacontenttype` application/protobuf (or application/x-protobuf): as the body in binary
  mode, as `data_base64` in a structured event. The envelope's id, source and time fill its
  event_id, gateway_id and event_time (a different value inside the data is refused);
- `source` is any URI reference, mapped to the gateway id by `gateway_id_from_source`.
Errors name CloudEvents attributes (`source`, `time`, `data.usage.input_tokens`), never the
fields of the internal event (`cloudevent_field` translates validation errors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import unquote, urlsplit

import msgspec
from google.protobuf.message import DecodeError as ProtoDecodeError

from civicmeter.api.limits import MAX_PII_KINDS, MAX_RULE_IDS
from civicmeter.api.usage.v1 import usage_event_pb2 as pb

EVENT_TYPE = "kr.civicmeter.usage.v1"
_ACCOUNT_KINDS = {
    "organizational": pb.ACCOUNT_KIND_ORGANIZATIONAL,
    "personal": pb.ACCOUNT_KIND_PERSONAL,
}
_ACCOUNT_KIND_NAMES = {v: k for k, v in _ACCOUNT_KINDS.items()}
# The gateway guard's decision (UsageEvent.decision); left out: no guard decided.
_DECISIONS = {
    "allow": pb.DECISION_ALLOW,
    "allow_with_warning": pb.DECISION_ALLOW_WITH_WARNING,
    "redact": pb.DECISION_REDACT,
    "deny": pb.DECISION_DENY,
}
_DECISION_NAMES = {v: k for k, v in _DECISIONS.items()}
_UINT32_MAX = 2**32 - 1
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
# msgspec's errors end with the JSON path of the field: "... - at `$[3].data.usage.images`".
_LOCATION = re.compile(r"(?P<message>.*) - at `\$(?:\[(?P<index>\d+)\])?\.?(?P<field>[^`]*)`", re.S)


class DecodeError(ValueError):
    """The body is not a well-formed batch of usage events; the message names where.

    `index` is the position of the offending event in the batch (None when the whole body is
    at fault) and `field` the path of the field inside that event ("body" for the whole body).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        located = _LOCATION.fullmatch(message)
        self.index: int | None = None
        self.field = "body"
        self.message = message
        if located is not None:
            self.message = located["message"]
            self.field = located["field"] or "body"
            if located["index"] is not None:
                self.index = int(located["index"])


class UsageJson(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    input_tokens: Int64 = 0
    output_tokens: Int64 = 0
    cache_read_input_tokens: Int64 = 0
    cache_creation_input_tokens: Int64 = 0
    reasoning_tokens: Int64 = 0
    images: Int64 = 0
    audio_milliseconds: Int64 = 0
    video_milliseconds: Int64 = 0
    characters: Int64 = 0
    requests: Int64 = 0
    seat_months: Int64 = 0


class RiskJson(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    # Counts are range-checked while converting, where the error can name the finding's key;
    # the number of kinds is bounded while decoding, before a huge map is built.
    pii_findings: Annotated[dict[str, int], msgspec.Meta(max_length=MAX_PII_KINDS)] = {}
    content_category: str = ""


class MoneyJson(msgspec.Struct, forbid_unknown_fields=True):
    currency_code: str
    units: Int64 = 0
    nanos: Int32 = 0


class EventDataJson(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    organization_id: str
    department_id: str
    user_id: str
    account_kind: str
    provider_name: str
    service_id: str
    operation_name: str
    usage: UsageJson
    request_model: str = ""
    risk: RiskJson | None = None
    purpose: str = ""
    reported_cost: MoneyJson | None = None
    decision: str = ""
    # Bounded while decoding, before a huge list is built; each id is checked by validation.
    decision_rule_ids: Annotated[list[str], msgspec.Meta(max_length=MAX_RULE_IDS)] = []


class CloudEventJson(msgspec.Struct, omit_defaults=True):
    """CloudEvents allows extension attributes, so unknown envelope keys are ignored."""

    specversion: str
    id: str
    source: str
    type: str
    time: datetime | None = None  # None: the time ingest received it
    data: EventDataJson | None = None
    datacontenttype: str = "application/json"
    data_base64: bytes | None = None  # msgspec decodes the base64 text


_batch_decoder = msgspec.json.Decoder(list[CloudEventJson])
_single_decoder = msgspec.json.Decoder(CloudEventJson)
_encoder = msgspec.json.Encoder()


def decode_batch(body: bytes, received: datetime | None = None) -> list[pb.UsageEvent]:
    """Decode a JSON array (or a single object) of usage CloudEvents into protobuf events.

    `received` is the time of events that carry none (default: now)."""
    try:
        stripped = body.lstrip()
        if stripped.startswith(b"{"):
            envelopes = [_single_decoder.decode(body)]
        else:
            envelopes = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise DecodeError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"malformed JSON: {exc}") from None
    except RecursionError:
        # Deeply nested arrays or objects, e.g. in an extension attribute msgspec skips.
        raise DecodeError("malformed JSON: arrays or objects nested too deeply") from None
    if not envelopes:
        raise DecodeError("the batch is empty: send at least one event")
    received = received or datetime.now(UTC)
    return [_to_proto(envelope, index, received) for index, envelope in enumerate(envelopes)]


def decode_binary(
    headers: Mapping[str, str], content_type: str, body: bytes, received: datetime | None = None
) -> pb.UsageEvent:
    """One event in binary content mode: attributes from the `ce-*` headers (percent-encoded,
    as the HTTP binding says), the data as the body, its type the Content-Type."""
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-"):
            attributes[lower[3:]] = unquote(value)
    for required in ("specversion", "id", "source", "type"):
        if required not in attributes:
            raise DecodeError(f"the ce-{required} header is required - at `$[0].{required}`")
    time = None
    if "time" in attributes:
        try:
            time = datetime.fromisoformat(attributes["time"])
        except ValueError:
            raise DecodeError("time must be an RFC 3339 timestamp - at `$[0].time`") from None
    envelope = CloudEventJson(
        specversion=attributes["specversion"],
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        time=time,
        datacontenttype=content_type,
    )
    if content_type in PROTOBUF_DATA_TYPES:
        envelope.data_base64 = body
    elif _is_json(content_type):
        try:
            envelope.data = _data_decoder.decode(body)
        except msgspec.ValidationError as exc:
            located = _LOCATION.fullmatch(str(exc))
            path = located["field"] if located else ""
            message = located["message"] if located else str(exc)
            raise DecodeError(f"{message} - at `$[0].data{'.' + path if path else ''}`") from None
        except msgspec.DecodeError as exc:
            raise DecodeError(f"malformed JSON: {exc} - at `$[0].data`") from None
        except RecursionError:
            raise DecodeError("malformed JSON: nested too deeply - at `$[0].data`") from None
    else:
        raise DecodeError(
            f"datacontenttype {content_type[:64]!r} is not JSON or protobuf"
            " - at `$[0].datacontenttype`"
        )
    return _to_proto(envelope, 0, received or datetime.now(UTC))


def gateway_id_from_source(source: str) -> str:
    """The gateway id a CloudEvents `source` names.

    - a plain identifier or URN (`gw-seoul-1`, `urn:seoul:gw-1`) is the gateway id itself;
    - a relative URI reference (`/gateways/seoul-1`, `/seoul/gw-1`) is its path, less the
      leading `/` and a leading `gateways/` segment: `seoul-1`, `seoul/gw-1`;
    - an absolute URI with an authority (`https://gw.seoul.go.kr/ai`) is its host and path:
      `gw.seoul.go.kr/ai`.
    A trailing `/` is dropped; a query or fragment is refused (it is not a gateway's name).
    The result must be a valid gateway id; the key a gateway presents is matched against it.
    """
    if not (source.startswith("/") or "://" in source):
        return source
    parts = urlsplit(source)
    if parts.query or parts.fragment:
        raise DecodeError("source must not carry a query or fragment - at `source`")
    if source.startswith("/"):
        name = parts.path.lstrip("/").removeprefix("gateways/")
    else:
        name = f"{parts.hostname or ''}{parts.path}"
    return name.rstrip("/")


# Fields of the event that stand for CloudEvents attributes; the others are data fields.
_ATTRIBUTES = {"event_id": "id", "gateway_id": "source", "event_time": "time"}


def cloudevent_field(field: str) -> str:
    """The CloudEvents name of an event field: `gateway_id` -> `source`,
    `event_time.seconds` -> `time`, `usage.input_tokens` -> `data.usage.input_tokens`."""
    head = field.split(".", 1)[0].split("[", 1)[0]
    if head in _ATTRIBUTES:
        return _ATTRIBUTES[head]
    return f"data.{field}"


PROTOBUF_DATA_TYPES = frozenset({"application/protobuf", "application/x-protobuf"})
# The bound ingest puts on one protobuf event (ingest.decoding.MAX_EVENT_BYTES).
_MAX_DATA_BYTES = 64 * 1024
_data_decoder = msgspec.json.Decoder(EventDataJson)


def _is_json(content_type: str) -> bool:
    return content_type in ("application/json", "text/json") or content_type.endswith("+json")


def _to_proto(ce: CloudEventJson, index: int, received: datetime) -> pb.UsageEvent:
    where = f"$[{index}]"
    if ce.specversion != "1.0":
        raise DecodeError(f"specversion must be '1.0' - at `{where}.specversion`")
    if ce.type != EVENT_TYPE:
        raise DecodeError(f"type must be {EVENT_TYPE!r} - at `{where}.type`")
    if ce.time is not None and ce.time.tzinfo is None:
        raise DecodeError(f"time must carry a UTC offset (RFC 3339) - at `{where}.time`")
    try:
        gateway_id = gateway_id_from_source(ce.source)
    except DecodeError as exc:
        raise DecodeError(f"{exc.message} - at `{where}.source`") from None
    when = ce.time or received
    if ce.data_base64 is not None:
        return _from_protobuf_data(ce, where, gateway_id, when)
    data = ce.data
    if data is None:
        raise DecodeError(f"data (or data_base64) is required - at `{where}.data`")
    kind = _ACCOUNT_KINDS.get(data.account_kind)
    if kind is None:
        raise DecodeError(
            f"account_kind must be organizational or personal - at `{where}.data.account_kind`"
        )
    event = pb.UsageEvent(
        event_id=ce.id,
        gateway_id=gateway_id,
        organization_id=data.organization_id,
        department_id=data.department_id,
        user_id=data.user_id,
        account_kind=kind,
        provider_name=data.provider_name,
        service_id=data.service_id,
        request_model=data.request_model,
        operation_name=data.operation_name,
        purpose=data.purpose,
        usage=pb.Usage(**msgspec.structs.asdict(data.usage)),
        decision_rule_ids=data.decision_rule_ids,
    )
    if data.decision:
        decision = _DECISIONS.get(data.decision)
        if decision is None:
            raise DecodeError(
                f"decision must be one of {', '.join(_DECISIONS)} - at `{where}.data.decision`"
            )
        event.decision = decision
    _set_time(event, when, where)
    if data.risk is not None:
        for name, count in data.risk.pii_findings.items():
            if not 0 <= count <= _UINT32_MAX:
                raise DecodeError(
                    f"count must be within 0 and {_UINT32_MAX}"
                    f" - at `{where}.data.risk.pii_findings.{name[:40]}`"
                )
            event.risk.pii_findings[name] = count
        event.risk.content_category = data.risk.content_category
    if data.reported_cost is not None:
        money = data.reported_cost
        event.reported_cost.currency_code = money.currency_code
        event.reported_cost.units = money.units
        event.reported_cost.nanos = money.nanos
    return event


def _set_time(event: pb.UsageEvent, when: datetime, where: str) -> None:
    try:
        event.event_time.FromDatetime(when)
    except (OverflowError, ValueError):
        # A valid RFC 3339 time whose offset takes it past year 9999 or before year 1 in UTC.
        raise DecodeError(
            f"time must lie within 0001-01-01 and 9999-12-31 in UTC - at `{where}.time`"
        ) from None


def _from_protobuf_data(
    ce: CloudEventJson, where: str, gateway_id: str, when: datetime
) -> pb.UsageEvent:
    """The event a protobuf `data_base64` (or binary-mode body) carries, under its envelope."""
    if ce.datacontenttype not in PROTOBUF_DATA_TYPES:
        raise DecodeError(
            "data_base64 needs a protobuf datacontenttype (application/protobuf)"
            f" - at `{where}.datacontenttype`"
        )
    raw = ce.data_base64 or b""
    if len(raw) > _MAX_DATA_BYTES:
        raise DecodeError(f"data is over {_MAX_DATA_BYTES} bytes - at `{where}.data`")
    event = pb.UsageEvent()
    try:
        event.ParseFromString(raw)
    except ProtoDecodeError:
        raise DecodeError(
            f"data is not a civicmeter.usage.v1.UsageEvent in protobuf - at `{where}.data`"
        ) from None
    event.DiscardUnknownFields()  # none of their bytes travel further
    for field, value, attribute in (
        (event.event_id, ce.id, "id"),
        (event.gateway_id, gateway_id, "source"),
    ):
        if field and field != value:
            raise DecodeError(
                f"the data's {attribute} differs from the envelope's - at `{where}.{attribute}`"
            )
    inner_time = event.event_time.ToDatetime(tzinfo=UTC) if event.HasField("event_time") else None
    if inner_time is not None and ce.time is not None and inner_time != ce.time:
        raise DecodeError(f"the data's time differs from the envelope's - at `{where}.time`")
    event.event_id = ce.id
    event.gateway_id = gateway_id
    if not event.HasField("event_time"):
        _set_time(event, when, where)
    return event


def encode_event(event: pb.UsageEvent) -> CloudEventJson:
    """The CloudEvent for a protobuf event (the inverse of decoding)."""
    usage = UsageJson(**{f.name: getattr(event.usage, f.name) for f in pb.Usage.DESCRIPTOR.fields})
    risk = None
    if event.risk.pii_findings or event.risk.content_category:
        risk = RiskJson(dict(event.risk.pii_findings), event.risk.content_category)
    cost = None
    if event.HasField("reported_cost"):
        rc = event.reported_cost
        cost = MoneyJson(rc.currency_code, rc.units, rc.nanos)
    return CloudEventJson(
        specversion="1.0",
        id=event.event_id,
        source=event.gateway_id,
        type=EVENT_TYPE,
        time=event.event_time.ToDatetime(tzinfo=UTC),
        data=EventDataJson(
            organization_id=event.organization_id,
            department_id=event.department_id,
            user_id=event.user_id,
            account_kind=_ACCOUNT_KIND_NAMES.get(event.account_kind, "unspecified"),
            provider_name=event.provider_name,
            service_id=event.service_id,
            operation_name=event.operation_name,
            usage=usage,
            request_model=event.request_model,
            risk=risk,
            purpose=event.purpose,
            reported_cost=cost,
            # An unknown number is sent as such: ingest refuses it, naming data.decision.
            decision=_DECISION_NAMES.get(event.decision, str(event.decision or "")),
            decision_rule_ids=list(event.decision_rule_ids),
        ),
    )


def encode_batch(events: list[pb.UsageEvent]) -> bytes:
    return _encoder.encode([encode_event(e) for e in events])
