"""Hostile input to the real ingest service (HTTP JSON, HTTP protobuf, gRPC) over the real
broker: every case gets 400 / INVALID_ARGUMENT (413 / RESOURCE_EXHAUSTED for sizes, 415 for
content types) naming the field, the service accepts a valid event right after, nothing of a
refused batch reaches Kafka, and fields the schema does not define never do either."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.metrics.export import NumberDataPoint

from civicmeter.api.event_json import encode_batch
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.wire import length_delimited, tag, varint, varint_field
from tests.factories import event
from tests.ingest.test_auth import KEYS, SEOUL_TOKEN, Ingest, publish_grpc, running_ingest

pytestmark = [pytest.mark.kafka]

AUTH = {"Authorization": f"Bearer {SEOUL_TOKEN}"}
JSON = "application/cloudevents-batch+json"
PROTOBUF = "application/x-protobuf"
METHOD = "/civicmeter.ingest.v1.IngestService/PublishEvents"
CANARY = f"CANARY-{uuid.uuid4().hex[:12]} 주민등록번호 900101-1234568 prompt text".encode()
refused_ids: list[str] = []  # ids of events in refused batches: none may reach Kafka


@pytest.fixture(scope="module")
async def ingest(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ingest]:
    keys = Path(tmp_path_factory.mktemp("keys")) / "gateway-keys.yaml"
    keys.write_text(yaml.safe_dump(KEYS))
    async with running_ingest(kafka_bootstrap, keys) as running:
        yield running


def hostile(**changes: Any) -> pb.UsageEvent:
    """A valid event of the test key's organisation and gateway, apart from `changes`."""
    message = event(event_time=datetime.now(UTC) - timedelta(minutes=5), **changes)
    message.event_id = f"hostile-{uuid.uuid4().hex}"
    refused_ids.append(message.event_id)
    return message


def json_event(**data: Any) -> dict[str, Any]:
    """The CloudEvent of a hostile() event with fields replaced (of its data but time, id)."""
    cloud_event: dict[str, Any] = json.loads(encode_batch([hostile()]))[0]
    for name, value in data.items():
        if name in ("time", "id"):
            cloud_event[name] = value
        else:
            cloud_event["data"][name] = value
    return cloud_event


def raw_json(old: bytes, new: bytes) -> bytes:
    body = json.dumps([json_event()], separators=(",", ":")).encode()
    assert old in body
    return body.replace(old, new)


async def post_raw(
    ingest: Ingest, body: bytes, content_type: str = JSON, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            ingest.url,
            data=io.BytesIO(body),
            headers={"Content-Type": content_type, **AUTH, **headers},
        ) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def grpc_raw(ingest: Ingest, body: bytes, **kwargs: Any) -> ingest_pb.PublishEventsResponse:
    """PublishEvents with a request body of raw bytes (whatever they are)."""
    async with grpc.aio.insecure_channel(ingest.grpc_target) as channel:
        call = channel.unary_unary(
            METHOD, response_deserializer=ingest_pb.PublishEventsResponse.FromString
        )
        response: ingest_pb.PublishEventsResponse = await call(
            body, metadata=(("authorization", f"Bearer {SEOUL_TOKEN}"),), timeout=10, **kwargs
        )
        return response


async def assert_healthy(ingest: Ingest) -> None:
    """A valid event is accepted on both fronts, and /healthz answers."""
    status, reply = await post_raw(ingest, encode_batch([event_now()]))
    assert (status, reply) == (202, {"accepted_count": 1})
    assert await publish_grpc(ingest.grpc_target, [event_now()], SEOUL_TOKEN) == 1
    async with (
        aiohttp.ClientSession() as session,
        session.get(ingest.url.replace("/v1/events", "/healthz")) as response,
    ):
        assert response.status == 200


def event_now() -> pb.UsageEvent:
    return event(event_time=datetime.now(UTC) - timedelta(minutes=5))


# --- HTTP, CloudEvents JSON -----------------------------------------------------------------

JSON_CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    # name: (body, the field the answer names; "body" for the whole body)
    "int64 above": (lambda: json.dumps([json_event(usage={"input_tokens": 2**63})]).encode(),
                    "data.usage.input_tokens"),
    "int64 below": (lambda: json.dumps([json_event(usage={"output_tokens": -(2**63) - 1})])
                    .encode(), "data.usage.output_tokens"),
    "uint32 pii count": (lambda: json.dumps([json_event(risk={"pii_findings": {"phone": 2**32}})])
                         .encode(), "data.risk.pii_findings.phone"),
    "money units": (lambda: json.dumps([json_event(
        reported_cost={"currency_code": "USD", "units": 2**63})]).encode(),
        "data.reported_cost.units"),
    "money nanos int32": (lambda: json.dumps([json_event(
        reported_cost={"currency_code": "USD", "nanos": 2**31})]).encode(),
        "data.reported_cost.nanos"),
    "money nanos 1e9": (lambda: json.dumps([json_event(
        reported_cost={"currency_code": "USD", "nanos": 10**9})]).encode(),
        "data.reported_cost.nanos"),
    "time past 9999 in UTC": (lambda: json.dumps([json_event(time="9999-12-31T23:59:59-23:59")])
                              .encode(), "time"),
    "time before year 1 in UTC": (lambda: json.dumps([json_event(
        time="0001-01-01T00:00:00+23:59")]).encode(), "time"),
    "extension 100,000 deep": (lambda: raw_json(b'"specversion"', b'"deep": ' + b"[" * 100_000
                                                + b"]" * 100_000 + b', "specversion"'), "body"),
    "NaN": (lambda: raw_json(b'"input_tokens":1000', b'"input_tokens":NaN'), "body"),
    "Infinity": (lambda: raw_json(b'"input_tokens":1000', b'"input_tokens":Infinity'), "body"),
    "1e400": (lambda: raw_json(b'"input_tokens":1000', b'"input_tokens":1e400'),
              "data.usage.input_tokens"),
    "float for an int": (lambda: raw_json(b'"input_tokens":1000', b'"input_tokens":1000.5'),
                         "data.usage.input_tokens"),
    "string for an int": (lambda: json.dumps([json_event(usage={"images": "7"})]).encode(),
                          "data.usage.images"),
    "number for the id": (lambda: json.dumps([json_event(id=7)]).encode(), "id"),
    "lone surrogate": (lambda: raw_json(b'"department_id":"', b'"department_id":"\\ud800'),
                       "body"),
    "not UTF-8": (lambda: raw_json(b'"department_id":"', b'"department_id":"\xff'), "body"),
    "prompt field": (lambda: json.dumps([json_event(prompt="leaked")]).encode(), "data"),
    "600,000 pii kinds": (lambda: json.dumps([json_event(
        risk={"pii_findings": {f"k{n}": 1 for n in range(600_000)}})]).encode(),
        "data.risk.pii_findings"),
    "plain user name": (lambda: json.dumps([json_event(user_id="hong.gildong")]).encode(),
                        "data.user_id"),
    "empty body": (lambda: b"", "body"),
    "a number": (lambda: b"7", "body"),
    "an empty batch": (lambda: b"[]", "body"),
}  # fmt: skip


@pytest.mark.parametrize("case", JSON_CASES)
async def test_hostile_json_is_a_400_naming_the_field(ingest: Ingest, case: str) -> None:
    build, field = JSON_CASES[case]
    status, reply = await post_raw(ingest, build())
    assert status == 400, reply
    [first, *_] = reply["errors"]
    assert first["field"] == field, reply
    assert "Traceback" not in json.dumps(reply) and ".py" not in json.dumps(reply)
    await assert_healthy(ingest)


# --- HTTP protobuf and gRPC -----------------------------------------------------------------


def with_time(seconds: int | None = None, nanos: int | None = None) -> pb.UsageEvent:
    message = hostile()
    if seconds is not None:
        message.event_time.seconds = seconds
    if nanos is not None:
        message.event_time.nanos = nanos
    return message


def with_pii_kinds(kinds: int) -> bytes:
    """An event naming `kinds` kinds of findings, encoded by hand (the runtime takes seconds
    to build a map of 100,000 entries, which is what ingest must not have to do)."""
    entries = b"".join(
        length_delimited(tag(1), length_delimited(tag(1), f"k{n}".encode()) + varint_field(2, 1))
        for n in range(kinds)
    )
    return hostile().SerializeToString() + length_delimited(tag(13), entries)


def with_cost(nanos: int) -> pb.UsageEvent:
    message = hostile()
    message.reported_cost.currency_code = "USD"
    message.reported_cost.nanos = nanos
    return message


PROTO_CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "seconds 10^12": (lambda: request(with_time(seconds=10**12)), "events[0].event_time.seconds"),
    "seconds -10^12": (lambda: request(with_time(seconds=-(10**12))),
                       "events[0].event_time.seconds"),
    "nanos -1": (lambda: request(with_time(nanos=-1)), "events[0].event_time.nanos"),
    "nanos 2^31-1": (lambda: request(with_time(nanos=2**31 - 1)), "events[0].event_time.nanos"),
    "nanos 10^9": (lambda: request(with_time(nanos=10**9)), "events[0].event_time.nanos"),
    "money nanos 2^31-1": (lambda: request(with_cost(2**31 - 1)),
                           "events[0].reported_cost.nanos"),
    "65 pii kinds": (lambda: request(with_pii_kinds(65)), "events[0].risk.pii_findings"),
    "Hangul and line breaks echoed": (lambda: request(hostile(department_id="복지\r\n정책")),
                                      "events[0].department_id"),
    "an event of 100,000 pii kinds": (lambda: request(with_pii_kinds(100_000)), "body"),
    "plain user name": (lambda: request(hostile(user_id="hong.gildong")), "events[0].user_id"),
    "e-mail user": (lambda: request(event_now(), hostile(user_id="kim@seoul.go.kr")),
                    "events[1].user_id"),
    "garbage": (lambda: b"\xff\xff\xff\xff", "body"),
    "truncated": (lambda: request(hostile())[:-3], "body"),
    "bad UTF-8 string": (lambda: length_delimited(tag(1), length_delimited(tag(1), b"\xff\xfe")),
                         "body"),
    "groups nested 100,000 deep": (lambda: bytes([0x9B, 0x06]) * 100_000, "body"),
}  # fmt: skip


def request(*events: pb.UsageEvent | bytes) -> bytes:
    """A PublishEventsRequest of events, or of events already encoded."""
    return b"".join(
        length_delimited(tag(1), e if isinstance(e, bytes) else e.SerializeToString())
        for e in events
    )


@pytest.mark.parametrize("case", PROTO_CASES)
async def test_hostile_protobuf_over_http_is_a_400_naming_the_field(
    ingest: Ingest, case: str
) -> None:
    build, field = PROTO_CASES[case]
    status, reply = await post_raw(ingest, build(), PROTOBUF)
    assert status == 400, reply
    [first, *_] = reply["errors"]
    where = field if first["index"] is None else f"events[{first['index']}].{first['field']}"
    assert where == field, reply
    await assert_healthy(ingest)


@pytest.mark.parametrize("case", PROTO_CASES)
async def test_hostile_protobuf_over_grpc_is_invalid_argument_naming_the_field(
    ingest: Ingest, case: str
) -> None:
    build, field = PROTO_CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_raw(ingest, build())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert (info.value.details() or "").startswith(field) or f" {field}:" in (
        info.value.details() or ""
    ), info.value.details()
    await assert_healthy(ingest)


# --- sizes and content types ----------------------------------------------------------------


async def test_a_batch_over_the_event_limit_is_413_and_nothing_is_published(
    ingest: Ingest,
) -> None:
    events = [hostile() for _ in range(ingest.settings.max_batch_events + 1)]
    status, reply = await post_raw(ingest, encode_batch(events))
    assert status == 413, reply
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_raw(ingest, request(*events))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_healthy(ingest)


async def test_a_body_over_the_size_limit_is_413_even_when_it_arrives_compressed(
    ingest: Ingest,
) -> None:
    limit = ingest.settings.max_body_bytes
    status, _ = await post_raw(ingest, b" " * (limit + 1))
    assert status == 413
    bomb = gzip.compress(b" " * (4 * limit), compresslevel=9)  # a few KB on the wire
    assert len(bomb) < limit // 100
    status, _ = await post_raw(ingest, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413
    padded = request(event_now()) + length_delimited(tag(15), b"\0" * (2 * limit))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_raw(ingest, padded, compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_healthy(ingest)


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("gzip", b"\x1f\x8b\x08\x00 not gzip", 400),
        ("deflate", b"not deflate", 400),
        ("zstd", b"not zstd", 415),
        ("unheard-of", b"any", 415),
        ("gzip, gzip", b"any", 415),
    ],
)
async def test_a_body_not_in_its_content_encoding_is_named(
    ingest: Ingest, encoding: str, body: bytes, status: int
) -> None:
    answer, reply = await post_raw(ingest, body, **{"Content-Encoding": encoding})
    assert answer == status, reply
    if status == 400:
        assert reply["errors"][0]["field"] == "body"
    await assert_healthy(ingest)


async def test_a_gzipped_batch_is_accepted(ingest: Ingest) -> None:
    body = gzip.compress(encode_batch([event_now()]))
    assert await post_raw(ingest, body, **{"Content-Encoding": "gzip"}) == (
        202,
        {"accepted_count": 1},
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded",
                     "application/" + "x" * 4_000]  # headers past 8 KB: aiohttp answers 400 itself
)  # fmt: skip
async def test_other_content_types_are_415_and_a_long_one_is_not_echoed(
    ingest: Ingest, content_type: str
) -> None:
    status, reply = await post_raw(ingest, encode_batch([hostile()]), content_type)
    assert status == 415
    assert len(reply["error"]) < 400
    await assert_healthy(ingest)


# --- fields the schema does not define ------------------------------------------------------


def with_unknown_fields(message: pb.UsageEvent) -> bytes:
    """The event with field 99 at the top level and field 42 inside Usage carrying CANARY."""
    top = varint(99 << 3 | 2) + varint(len(CANARY)) + CANARY
    inside = varint(42 << 3 | 2) + varint(len(CANARY)) + CANARY
    return message.SerializeToString() + top + length_delimited(tag(12), inside)


def unknown_field_events(ingest: Ingest) -> int:
    data = ingest.metrics.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "civicmeter.ingest.unknown_fields":
                    for point in metric.data.data_points:
                        assert isinstance(point, NumberDataPoint)
                        total += int(point.value)
    return total


async def test_unknown_fields_are_dropped_counted_and_never_reach_kafka(ingest: Ingest) -> None:
    before = unknown_field_events(ingest)
    over_http, over_grpc = event_now(), event_now()
    body = length_delimited(tag(1), with_unknown_fields(over_http))
    status, reply = await post_raw(ingest, body, PROTOBUF)
    assert (status, reply) == (202, {"accepted_count": 1})
    body = length_delimited(tag(1), with_unknown_fields(over_grpc))
    assert (await grpc_raw(ingest, body)).accepted_count == 1
    assert unknown_field_events(ingest) - before == 2

    records = await topic_records(ingest, until=over_grpc.event_id)
    on_kafka = [e for r in records for e in pb.UsageEventBatch.FromString(r).events]
    assert {over_http.event_id, over_grpc.event_id} <= {e.event_id for e in on_kafka}
    assert all(CANARY not in r for r in records)
    [stored] = [e for e in on_kafka if e.event_id == over_http.event_id]
    assert stored == over_http  # every defined field kept


async def test_nothing_of_a_refused_batch_reached_kafka(ingest: Ingest) -> None:
    """Runs after the cases above (file order): their refused events are not on the topic."""
    last = event_now()
    assert await publish_grpc(ingest.grpc_target, [last], SEOUL_TOKEN) == 1
    records = await topic_records(ingest, until=last.event_id)
    on_kafka = {e.event_id for r in records for e in pb.UsageEventBatch.FromString(r).events}
    assert len(refused_ids) > 20
    assert on_kafka.isdisjoint(refused_ids)


async def topic_records(ingest: Ingest, until: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every record value on the ingest's topic, read until event `until` appears."""
    import time

    consumer = AIOKafkaConsumer(
        ingest.topic,
        bootstrap_servers=ingest.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not any(until.encode() in v for v in values):
            assert time.monotonic() < deadline, f"{until} never reached {ingest.topic}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value or b"" for r in records]
    finally:
        await consumer.stop()
    return values
