"""The official CloudEvents SDK (`cloudevents`) against the real ingest service over the real
broker, in every HTTP mode it offers: binary (JSON and protobuf data), structured (JSON data
and data_base64), a batch of its structured events, and the SDK's older v1 API. Events are read
back from the topic; errors name CloudEvents attributes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as ce_v1_conversion
from cloudevents.v1 import http as ce_v1

from civicmeter.api.event_json import EVENT_TYPE
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.gateway import UsageEmitter
from tests.factories import user_id
from tests.ingest.test_auth import MULTI_TOKEN, SEOUL_TOKEN, Ingest

pytestmark = [pytest.mark.kafka]

PROTOBUF = "application/protobuf"
JSON = "application/json"


def data(input_tokens: int = 812, output_tokens: int = 95) -> dict[str, Any]:
    return {
        "organization_id": "seoul", "department_id": "welfare", "user_id": user_id("kim"),
        "account_kind": "organizational", "provider_name": "openai", "service_id": "openai-api",
        "request_model": "gpt-4o", "operation_name": "chat",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }  # fmt: skip


def protobuf_data(input_tokens: int) -> bytes:
    """The data as a civicmeter.usage.v1.UsageEvent: the envelope gives id, source, time."""
    return pb.UsageEvent(
        organization_id="seoul", department_id="welfare", user_id=user_id("kim"),
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL, provider_name="openai",
        service_id="openai-api", request_model="gpt-4o", operation_name="chat",
        usage=pb.Usage(input_tokens=input_tokens, output_tokens=3),
    ).SerializeToString()  # fmt: skip


def cloud_event(
    payload: dict[str, Any] | bytes, source: str = "/gateways/gw-seoul-1", **attributes: Any
) -> CloudEvent:
    attrs = {"id": f"ce-{uuid.uuid4().hex}", "source": source, "type": EVENT_TYPE, **attributes}
    attrs.setdefault("datacontenttype", PROTOBUF if isinstance(payload, bytes) else JSON)
    return CloudEvent(attributes=attrs, data=payload)


async def post(
    ingest: Ingest, headers: dict[str, str], body: bytes, token: str = SEOUL_TOKEN
) -> tuple[int, dict[str, Any]]:
    # Without a Content-Type (the SDK's v1 binary mode), send none rather than aiohttp's default.
    skip = () if any(k.lower() == "content-type" for k in headers) else ("Content-Type",)
    async with (
        aiohttp.ClientSession(skip_auto_headers=skip) as session,
        session.post(
            ingest.url, data=body, headers={"Authorization": f"Bearer {token}", **headers}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def published(
    ingest: Ingest, ids: set[str], timeout: float = 30.0
) -> dict[str, pb.UsageEvent]:
    """The events with these ids on the ingest's topic, read from the start."""
    consumer = AIOKafkaConsumer(
        ingest.topic,
        bootstrap_servers=ingest.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, pb.UsageEvent] = {}
    try:
        deadline = time.monotonic() + timeout
        while not ids <= found.keys():
            assert time.monotonic() < deadline, f"{ids - found.keys()} never reached the topic"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    for e in pb.UsageEventBatch.FromString(record.value or b"").events:
                        if e.event_id in ids:
                            found[e.event_id] = e
    finally:
        await consumer.stop()
    return found


async def test_every_mode_of_the_sdk_is_accepted_and_published(ingest: Ingest) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    binary_json = cloud_event(data(input_tokens=101), time=when)
    binary_protobuf = cloud_event(protobuf_data(input_tokens=102))
    structured_json = cloud_event(data(input_tokens=103), source="gw-seoul-1", time=when)
    structured_base64 = cloud_event(protobuf_data(input_tokens=104), time=when)
    batch = [cloud_event(data(input_tokens=105 + n)) for n in range(3)]
    legacy = ce_v1.CloudEvent(
        {"id": f"ce-{uuid.uuid4().hex}", "source": "/gateways/gw-seoul-1", "type": EVENT_TYPE},
        data(input_tokens=108),
    )
    legacy_structured = ce_v1.CloudEvent(
        {"id": f"ce-{uuid.uuid4().hex}", "source": "/gateways/gw-seoul-1/", "type": EVENT_TYPE},
        data(input_tokens=109),
    )
    before = datetime.now(UTC).replace(microsecond=0)

    requests: list[tuple[dict[str, str], bytes]] = []
    # The SDK stamps every event with a time; a gateway may not: these two go without.
    for event in (binary_json, binary_protobuf):
        message = ce_http.to_binary_event(event)
        if event is binary_protobuf:
            del message.headers["ce-time"]
        requests.append((message.headers, message.body))
    for event in (structured_json, structured_base64):
        message = ce_http.to_structured_event(event)
        requests.append((message.headers, message.body))
    # The SDK has no batch writer: a batch is a JSON array of its structured events.
    array = json.dumps(
        [{k: v for k, v in json.loads(JSONFormat().write(e)).items() if k != "time"} for e in batch]
    ).encode()
    requests.append(({"Content-Type": "application/cloudevents-batch+json"}, array))
    requests.append(ce_v1_conversion.to_binary(legacy))
    requests.append(ce_v1_conversion.to_structured(legacy_structured))
    for headers, body in requests:
        status, answer = await post(ingest, dict(headers), body)
        count = len(json.loads(body)) if body.startswith(b"[") else 1
        assert (status, answer) == (202, {"accepted_count": count}), headers

    assert "ce-specversion" in requests[0][0] and "ce-time" not in requests[1][0]
    assert b"data_base64" in requests[3][1]
    expected = {
        binary_json.get_id(): 101, binary_protobuf.get_id(): 102, structured_json.get_id(): 103,
        structured_base64.get_id(): 104, **{e.get_id(): 105 + n for n, e in enumerate(batch)},
        legacy["id"]: 108, legacy_structured["id"]: 109,
    }  # fmt: skip
    events = await published(ingest, set(expected))
    assert {i: e.usage.input_tokens for i, e in events.items()} == expected
    # Every relative source maps to the gateway the key is bound to.
    assert {e.gateway_id for e in events.values()} == {"gw-seoul-1"}
    assert {e.organization_id for e in events.values()} == {"seoul"}
    for event in (binary_json, structured_json, structured_base64):
        assert events[event.get_id()].event_time.ToDatetime(tzinfo=UTC) == when
    # Without `time`, the event happened when ingest received it.
    received = events[binary_protobuf.get_id()].event_time.ToDatetime(tzinfo=UTC)
    assert before <= received <= datetime.now(UTC)
    assert events[batch[0].get_id()].event_time.ToDatetime(tzinfo=UTC) >= before


async def bad_structured(ingest: Ingest, **attributes: Any) -> tuple[int, dict[str, Any]]:
    event = cloud_event(data(), time=datetime.now(UTC))
    envelope = {**json.loads(JSONFormat().write(event)), **attributes}
    body = json.dumps([envelope]).encode()
    # A key bound to no gateway: the source reaches validation.
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    return await post(ingest, headers, body, MULTI_TOKEN)


async def test_errors_name_the_cloudevents_attribute(ingest: Ingest) -> None:
    status, body = await bad_structured(ingest, source="/gateways/not an id!")
    assert status == 400
    assert body["errors"][0]["field"] == "source"
    assert body["error"].startswith("1 invalid event(s); first: events[0].source:")
    assert "gateway_id" not in json.dumps(body)

    status, body = await bad_structured(ingest, source="/gateways/gw-seoul-1?x=1")
    assert (status, body["errors"][0]["field"]) == (400, "source")

    status, body = await bad_structured(ingest, time="2020-01-01T00:00:00Z")  # too old
    assert (status, body["errors"][0]["field"]) == (400, "time")

    status, body = await bad_structured(ingest, id="")
    assert (status, body["errors"][0]["field"]) == (400, "id")

    status, body = await bad_structured(ingest, data={**data(), "user_id": "kim@seoul.go.kr"})
    assert (status, body["errors"][0]["field"]) == (400, "data.user_id")
    assert "kim@" not in json.dumps(body)  # a refused user id is never echoed

    status, body = await post(ingest, {"Content-Type": "application/cloudevents-batch+json"}, b"[]")
    assert status == 400
    empty = "the batch is empty: send at least one event"
    assert body["errors"] == [{"index": None, "field": "body", "message": empty}]


async def test_binary_mode_errors_name_the_attribute(ingest: Ingest) -> None:
    message = ce_http.to_binary_event(cloud_event(data()))
    headers = {k: v for k, v in message.headers.items() if k != "ce-id"}
    status, body = await post(ingest, headers, message.body)
    assert (status, body["errors"][0]["field"]) == (400, "id")

    message = ce_http.to_binary_event(cloud_event(data(input_tokens=-5)))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert (status, body["errors"][0]["field"]) == (400, "data.usage.input_tokens")

    message = ce_http.to_binary_event(cloud_event(b"\xff\xff not protobuf"))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert (status, body["errors"][0]["field"]) == (400, "data")

    message = ce_http.to_binary_event(cloud_event(data(), datacontenttype="text/plain"))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert status == 415

    # A protobuf event whose own id contradicts its envelope's.
    inner = pb.UsageEvent.FromString(protobuf_data(5))
    inner.event_id = "another-id"
    message = ce_http.to_binary_event(cloud_event(inner.SerializeToString()))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert (status, body["errors"][0]["field"]) == (400, "id")


async def test_a_source_naming_another_gateway_is_refused(ingest: Ingest) -> None:
    message = ce_http.to_binary_event(cloud_event(data(), source="/gateways/gw-busan-1"))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert status == 403
    assert body["error"].startswith("events[0].source: key 'gw-seoul' may not report usage as")
    assert "'gw-busan-1'" in body["error"]

    batch = [json.loads(JSONFormat().write(cloud_event({**data(), "organization_id": "busan"})))]
    status, body = await post(
        ingest, {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch).encode()
    )
    assert status == 403
    assert body["error"].startswith("events[0].data.organization_id:")


async def test_the_guards_decision_travels_in_json(ingest: Ingest) -> None:
    denied = cloud_event({**data(), "decision": "deny", "decision_rule_ids": ["banned_provider"]})
    redacted = cloud_event({**data(), "decision": "redact", "decision_rule_ids": ["pii.kr_rrn"]})
    undecided = cloud_event(data())
    batch = [json.loads(JSONFormat().write(e)) for e in (denied, undecided)]
    status, answer = await post(
        ingest, {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch).encode()
    )
    assert (status, answer) == (202, {"accepted_count": 2})
    message = ce_http.to_binary_event(redacted)
    assert (await post(ingest, dict(message.headers), message.body))[0] == 202
    # The SDK's emitter sends JSON by default: a guarded event keeps its decision.
    warned = pb.UsageEvent.FromString(protobuf_data(7))
    warned.event_id, warned.gateway_id = f"ce-{uuid.uuid4().hex}", "gw-seoul-1"
    warned.event_time.FromDatetime(datetime.now(UTC))
    warned.decision = pb.DECISION_ALLOW_WITH_WARNING
    warned.decision_rule_ids.extend(["off_hours", "document.internal"])
    async with UsageEmitter(ingest.url.removesuffix("/v1/events"), token=SEOUL_TOKEN) as emitter:
        await emitter.emit(warned)

    ids = [denied.get_id(), redacted.get_id(), undecided.get_id(), warned.event_id]
    events = await published(ingest, set(ids))
    assert [(events[i].decision, list(events[i].decision_rule_ids)) for i in ids] == [
        (pb.DECISION_DENY, ["banned_provider"]),
        (pb.DECISION_REDACT, ["pii.kr_rrn"]),
        (pb.DECISION_UNSPECIFIED, []),
        (pb.DECISION_ALLOW_WITH_WARNING, ["off_hours", "document.internal"]),
    ]


async def test_a_bad_decision_is_named_by_its_attribute_path(ingest: Ingest) -> None:
    status, body = await bad_structured(ingest, data={**data(), "decision": "block"})
    assert (status, body["errors"][0]["field"]) == (400, "data.decision")
    assert body["errors"][0]["message"] == (
        "decision must be one of allow, allow_with_warning, redact, deny"
    )
    assert body["errors"][0]["index"] == 0

    message = ce_http.to_binary_event(cloud_event({**data(), "decision": "DECISION_DENY"}))
    status, body = await post(ingest, dict(message.headers), message.body)
    assert (status, body["errors"][0]["field"]) == (400, "data.decision")

    status, body = await bad_structured(ingest, data={**data(), "decision_rule_ids": ["x"] * 33})
    assert (status, body["errors"][0]["field"]) == (400, "data.decision_rule_ids")

    status, body = await bad_structured(
        ingest, data={**data(), "decision": "deny", "decision_rule_ids": ["ok", "not a rule!"]}
    )
    assert (status, body["errors"][0]["field"]) == (400, "data.decision_rule_ids[1]")

    status, body = await bad_structured(ingest, data={**data(), "decision": 4})
    assert (status, body["errors"][0]["field"]) == (400, "data.decision")
