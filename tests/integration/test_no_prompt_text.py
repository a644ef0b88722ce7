"""Canary personal data in a prompt: the gateway SDK counts it, the pipeline meters and alerts
on the counts, and the text itself is nowhere: not in Kafka, not in ClickHouse, not in logs.
Nor can a sender smuggle text in fields the schema does not define: ingest drops them, and the
processor drops them from whatever else wrote to usage.raw."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from civicmeter.api.alert.v1 import alert_pb2, alert_service_pb2, alert_service_pb2_grpc
from civicmeter.api.ingest.v1 import ingest_service_pb2 as ingest_pb
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.events.wire import length_delimited, tag, varint
from civicmeter.core.store.connection import connect
from civicmeter.gateway import UsageEmitter, detect_pii, pseudonymise_user
from loadtests.stack import LocalStack

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TOKEN = f"CANARY{uuid.uuid4().hex[:12].upper()}"
CANARIES = [TOKEN, "900101-1234568", "9001011234568", "010-2345-6789", "01023456789",
            f"{TOKEN.lower()}@example.go.kr"]  # fmt: skip
PROMPT = (f"민원인 주민등록번호 900101-1234568, 연락처 010-2345-6789, "
          f"이메일 {TOKEN.lower()}@example.go.kr 로 회신해 주세요. {TOKEN}")  # fmt: skip


@pytest.fixture(scope="module")
def canary_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("canary")
    # Debug logs and console spans: the most a service ever writes about an event.
    env = {"CIVICMETER_LOG_LEVEL": "DEBUG", "OTEL_TRACES_EXPORTER": "console",
           "CIVICMETER_TOPIC_RAW": "canary.raw", "CIVICMETER_TOPIC_RATED": "canary.rated",
           "CIVICMETER_TOPIC_DLQ": "canary.dlq",
           "CIVICMETER_TOPIC_ALERTS": "canary.alerts",
           "CIVICMETER_PROCESSOR_GROUP_ID": "canary-processor",
           "CIVICMETER_SINK_GROUP_ID": "canary-sink"}  # fmt: skip
    with LocalStack(kafka_bootstrap, workdir, extra_env=env) as stack:
        yield stack


def chat_event() -> pb.UsageEvent:
    event = pb.UsageEvent(
        event_id=str(uuid.uuid4()), gateway_id="gw-canary", organization_id="seoul",
        department_id="welfare", user_id=pseudonymise_user(b"canary-key-0123456789", "lee"),
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL, provider_name="openai",
        service_id="openai-api", request_model="gpt-4o", operation_name="chat",
        usage=pb.Usage(input_tokens=50, output_tokens=10))  # fmt: skip
    event.event_time.FromDatetime(datetime.now(UTC))
    return event


def with_unknown_fields(event: pb.UsageEvent, text: bytes) -> bytes:
    """The event with `text` in field 99 at the top level and in field 42 inside Usage."""
    top = varint(99 << 3 | 2) + varint(len(text)) + text
    inside = varint(42 << 3 | 2) + varint(len(text)) + text
    return event.SerializeToString() + top + length_delimited(tag(12), inside)


async def test_text_in_unknown_fields_reaches_no_topic_downstream(canary_stack: LocalStack) -> None:
    """Runs before the test below, which stops the stack."""
    stack = canary_stack
    # Not one of CANARIES: the test below finds this on canary.raw, where its producer wrote it.
    smuggled = f"UNKNOWNFIELD{uuid.uuid4().hex[:12].upper()} 주민등록번호 850505-2345671".encode()
    via_ingest, via_raw = chat_event(), chat_event()
    # A gateway sends the fields to ingest...
    request = length_delimited(tag(1), with_unknown_fields(via_ingest, smuggled))
    async with grpc.aio.insecure_channel(stack.ingest_grpc_target) as channel:
        publish = channel.unary_unary(
            "/civicmeter.ingest.v1.IngestService/PublishEvents",
            response_deserializer=ingest_pb.PublishEventsResponse.FromString,
        )
        reply = await publish(request, metadata=stack.ingest_metadata, timeout=10)
    assert reply.accepted_count == 1
    # ... and a producer other than ingest writes them straight to usage.raw.
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        batch = length_delimited(tag(1), with_unknown_fields(via_raw, smuggled))
        await producer.send_and_wait("canary.raw", batch)
    finally:
        await producer.stop()

    downstream = ["canary.rated", "canary.dlq", "canary.cost", "canary.alerts"]
    deadline = asyncio.get_running_loop().time() + 90
    rated = b""
    while not (via_ingest.event_id.encode() in rated and via_raw.event_id.encode() in rated):
        assert asyncio.get_running_loop().time() < deadline, "the events were never rated"
        rated = await everything_in_kafka(stack.kafka_bootstrap, ["canary.rated"])
    assert smuggled not in await everything_in_kafka(stack.kafka_bootstrap, downstream)
    # Whatever ingest wrote is clean too: the only copy on usage.raw is the raw producer's.
    assert (await everything_in_kafka(stack.kafka_bootstrap, ["canary.raw"])).count(smuggled) == 2


async def test_canary_personal_data_is_counted_alerted_and_stored_nowhere(
    canary_stack: LocalStack,
) -> None:
    stack = canary_stack
    findings = detect_pii(PROMPT)  # the gateway: counts by type, the prompt stays here
    assert findings == {"kr_rrn": 1, "phone": 1, "email": 1}
    event = pb.UsageEvent(
        event_id=str(uuid.uuid4()), gateway_id="gw-canary", organization_id="seoul",
        department_id="welfare", user_id=pseudonymise_user(b"canary-key-0123456789", "kim"),
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL, provider_name="openai",
        service_id="chatgpt", operation_name="chat",
        usage=pb.Usage(input_tokens=len(PROMPT), output_tokens=120))  # fmt: skip
    event.risk.pii_findings.update(findings)
    event.event_time.FromDatetime(datetime.now(UTC))

    async with grpc.aio.insecure_channel(stack.query_target) as channel:
        watch = alert_service_pb2_grpc.AlertServiceStub(channel).WatchAlerts(
            alert_service_pb2.WatchAlertsRequest(
                filter=alert_service_pb2.AlertFilter(
                    organization_id="seoul", alert_types=["pii_sent"]
                ),
                replay_seconds=60,
            )
        )
        async with UsageEmitter(stack.ingest_url, token=stack.gateway_token) as emitter:
            await emitter.send([event])
        opened = await asyncio.wait_for(watch.read(), 60)
        watch.cancel()
    assert opened.alert.alert_type == "pii_sent"
    assert opened.alert.trigger_event_id == event.event_id
    assert opened.alert.severity >= alert_pb2.SEVERITY_MEDIUM

    kafka_bytes = await everything_in_kafka(
        stack.kafka_bootstrap,
        ["canary.raw", "canary.rated", "canary.dlq", "canary.cost", "canary.alerts"],
    )
    assert event.event_id.encode() in kafka_bytes  # the search does see the event's records
    stack.stop()  # releases the embedded ClickHouse so this test can open it
    client = connect(ClickHouseSettings(path=str(stack.workdir / "chdb")))
    stored = everything_in_clickhouse(client)
    assert event.event_id in stored
    logs = "\n".join(p.read_text(errors="replace") for p in Path(stack.workdir, "logs").iterdir())
    assert "process canary.raw" in logs  # the logs do hold the spans of this event
    for canary in CANARIES:
        assert canary.encode() not in kafka_bytes, f"{canary} in Kafka"
        assert canary not in stored, f"{canary} in ClickHouse"
        assert canary not in logs, f"{canary} in the logs"


async def everything_in_kafka(bootstrap: str, topics: list[str]) -> bytes:
    """Keys, values and headers of every record of `topics`, concatenated."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    chunks: list[bytes] = []
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=1000)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                for r in records:
                    chunks += [r.key or b"", r.value or b""]
                    chunks += [k.encode() + v for k, v in r.headers]
    finally:
        await consumer.stop()
    return b"\n".join(chunks)


def everything_in_clickhouse(client: Client) -> str:
    """Every row of every table of the civicmeter database, as text."""
    tables = [
        row[0]
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = 'civicmeter' "
            "AND engine NOT LIKE '%View'"
        ).result_rows
    ]
    assert "usage_events" in tables and "alert_occurrences" in tables
    return "\n".join(
        str(row)
        for table in tables
        for row in client.query(f"SELECT * FROM civicmeter.{table}").result_rows
    )
