"""aiokafka clients built from KafkaSettings, and the topics civicmeter needs.

Producers are idempotent (`acks="all"`, `enable_idempotence=True`), batch with a linger and
compress; records are keyed by organisation and user so one user's events stay in order on
one partition.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from civicmeter.core.config import KafkaSettings


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "SCRAM-SHA-512"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    return options


def event_key(organization_id: str, user_id: str) -> bytes:
    """The partition key: one user's events stay in order on one partition."""
    return f"{organization_id}/{user_id}".encode()


def make_producer(
    settings: KafkaSettings,
    *,
    linger_ms: int = 20,
    compression: str | None = "lz4",
    max_batch_size: int = 1_048_576,
    client_id: str = "civicmeter",
) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        compression_type=compression if compression not in (None, "", "none") else None,
        max_request_size=8 * 1_048_576,
    )


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str, client_id: str = "civicmeter"
) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: callers commit after a durable write."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(settings),
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1_048_576,
        fetch_max_bytes=32 * 1_048_576,
    )


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create civicmeter's topics if missing (production clusters may pre-create them)."""
    topics = settings.topics
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="civicmeter-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topics.raw, topics.rated, topics.dlq, topics.cost_windows, topics.alerts]
        new = [
            NewTopic(name, topics.partitions, topics.replication_factor)
            for name in wanted
            if name not in existing
        ]
        # Another service may create them first: that is the state we want.
        with contextlib.suppress(TopicAlreadyExistsError):
            if new:
                await admin.create_topics(new)
    finally:
        await admin.close()
