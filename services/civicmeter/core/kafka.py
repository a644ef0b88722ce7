"""aiokafka clients built from KafkaSettings, and the topics civicmeter needs.

Producers are idempotent (`acks="all"`, `enable_idempotence=True`), batch with a linger and
compress as their caller chooses; records are keyed by organisation and user so one user's
events stay in order on one partition. usage.raw and usage.rated carry many events per record
(`send_event_batches`; `send_encoded_events` for events already encoded).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from civicmeter.core.config import KafkaSettings
from civicmeter.core.events.encodings import join_events
from civicmeter.core.events.event_batch import frame


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


User = TypeVar("User", bound=Hashable)
_round_robin = itertools.count()
# A batch record stays well under a producer batch (1 MiB) and the broker's message limit.
MAX_EVENT_BATCH_BYTES = 512 * 1024


async def send_batched(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    headers: Sequence[tuple[str, bytes]] = (),
) -> list[asyncio.Future[Any]]:
    """Send (key, value) records as whole batches, one per partition, rather than one by one.

    `producer.send` costs a partition lookup, a future and a queue operation per record, which
    at tens of thousands of records a second is most of a producer's time. The records land on
    the partitions aiokafka's default partitioner would choose (murmur2 of the key), so keyed
    order is the same either way; keyless ones spread round-robin. The returned futures
    resolve when Kafka has acknowledged each batch.
    """
    partitions = sorted(await producer.partitions_for(topic))
    return await _send_to_partitions(
        producer,
        topic,
        ((_partition_of(key, partitions), key, value) for key, value in records),
        headers,
    )


async def send_event_batches(
    producer: AIOKafkaProducer,
    topic: str,
    events: Iterable[tuple[bytes, bytes]],
    headers: Sequence[tuple[str, bytes]] = (),
    max_record_bytes: int = MAX_EVENT_BATCH_BYTES,
) -> list[asyncio.Future[Any]]:
    """Send keyed, encoded events as batch records: many events per Kafka record.

    The events that hash to one partition (murmur2 of their key, as the default partitioner
    would place them one by one) travel together in one record, in order, as the repeated
    field 1 of a batch message (core/events/event_batch.py); a record holds at most
    `max_record_bytes`. Its key is its first event's key. So one user's events stay in order on
    one partition, and a reader pays Kafka's per-record costs once per few hundred events.
    """
    partitions = sorted(await producer.partitions_for(topic))
    records = event_batch_records(events, partitions, max_record_bytes)
    return await _send_to_partitions(producer, topic, records, headers)


def event_batch_records(
    events: Iterable[tuple[bytes, bytes]],
    partitions: Sequence[int],
    max_record_bytes: int = MAX_EVENT_BATCH_BYTES,
) -> list[tuple[int, bytes | None, bytes]]:
    """The (partition, key, value) batch records of send_event_batches."""
    open_records: dict[int, tuple[bytes, list[bytes], int]] = {}
    records: list[tuple[int, bytes | None, bytes]] = []
    for key, encoded in events:
        partition = _partition_of(key, partitions)
        entry = frame(encoded)
        held = open_records.get(partition)
        if held is not None and held[2] + len(entry) > max_record_bytes:
            records.append((partition, held[0], b"".join(held[1])))
            held = None
        if held is None:
            open_records[partition] = (key, [entry], len(entry))
        else:
            held[1].append(entry)
            open_records[partition] = (held[0], held[1], held[2] + len(entry))
    records.extend((p, key, b"".join(parts)) for p, (key, parts, _) in open_records.items())
    return records


async def send_encoded_events(
    producer: AIOKafkaProducer,
    topic: str,
    events: Sequence[bytes],
    keys: EventKeys,
    headers: Sequence[tuple[str, bytes]] = (),
    max_record_bytes: int = MAX_EVENT_BATCH_BYTES,
) -> list[asyncio.Future[Any]]:
    """send_event_batches for events' encodings and their keys (`keys`, in the same order)."""
    partitions = sorted(await producer.partitions_for(topic))
    records = encoded_event_records(events, keys, partitions, max_record_bytes)
    return await _send_to_partitions(producer, topic, records, headers)


@dataclass(frozen=True)
class EventKeys:
    """Each event's partition key and its murmur2 hash (as aiokafka's default partitioner
    computes it), in the order of the events."""

    keys: list[bytes]
    hashes: list[int]


class KeyCache(Generic[User]):
    """Partition keys by what names an event's user (an (organisation, user) pair, or an
    encoding holding them), each key and its hash worked out once while the user stays among
    the recent ones: the same users report all day."""

    def __init__(self, key_of: Callable[[User], bytes], limit: int = 200_000) -> None:
        self._key_of = key_of
        self._limit = limit
        self._keys: dict[User, bytes] = {}
        self._hashes: dict[User, int] = {}

    def keys(self, users: Iterable[User]) -> EventKeys:
        users = list(users)
        if not self._hashes.keys() >= set(users):
            if len(self._hashes) >= self._limit:
                self._keys.clear()
                self._hashes.clear()
            for user in set(users) - self._hashes.keys():
                key = self._keys[user] = self._key_of(user)
                self._hashes[user] = _key_hash(key)
        return EventKeys(
            list(map(self._keys.__getitem__, users)), list(map(self._hashes.__getitem__, users))
        )


def encoded_event_records(
    events: Sequence[bytes],
    keys: EventKeys,
    partitions: Sequence[int],
    max_record_bytes: int = MAX_EVENT_BATCH_BYTES,
) -> list[tuple[int, bytes | None, bytes]]:
    """event_batch_records for events' encodings: each partition's events picked out and
    framed by the protobuf runtime (core/events/encodings.py), not one by one."""
    count = len(partitions)
    places = list(map(count.__rmod__, keys.hashes))  # index of each event's partition
    records: list[tuple[int, bytes | None, bytes]] = []
    for place in sorted(set(places)):
        chosen = list(map(place.__eq__, places))
        value = join_events(list(itertools.compress(events, chosen)))
        if len(value) <= max_record_bytes:
            records.append((partitions[place], keys.keys[places.index(place)], value))
        else:  # rare: several records for this partition, each at most max_record_bytes
            records += event_batch_records(
                zip(
                    itertools.compress(keys.keys, chosen),
                    itertools.compress(events, chosen),
                    strict=True,
                ),
                [partitions[place]],
                max_record_bytes,
            )
    return records


async def send_to_partitions(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[int, bytes | None, bytes]],
    headers: Sequence[tuple[str, bytes]] = (),
) -> list[asyncio.Future[Any]]:
    """Send (partition, key, value) records to the partitions they name, as whole batches."""
    return await _send_to_partitions(producer, topic, records, headers)


def _partition_of(key: bytes | None, partitions: Sequence[int]) -> int:
    if key is None:
        return partitions[next(_round_robin) % len(partitions)]
    return partitions[_key_hash(key) % len(partitions)]


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    """aiokafka's murmur2 is pure Python (microseconds a key) and a user's key recurs in
    every batch: hashed once while it stays among the recent keys."""
    return int(murmur2(key) & 0x7FFFFFFF)


async def _send_to_partitions(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[int, bytes | None, bytes]],
    headers: Sequence[tuple[str, bytes]],
) -> list[asyncio.Future[Any]]:
    open_batches: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    header_list = list(headers)
    for partition, key, value in records:
        batch = open_batches.get(partition)
        if batch is None:
            batch = open_batches[partition] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=header_list) is None:
            # Full: send it and start the next one for this partition.
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=header_list) is None:
                raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")
    for partition, batch in open_batches.items():
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str, client_id: str = "civicmeter"
) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: callers commit after a durable write."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(settings),
        client_id=client_id,
        group_id=group_id,
        group_instance_id=settings.group_instance_id,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.session_timeout_ms // 3,
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
        wanted = [topics.raw, topics.rated, topics.dlq, topics.alerts]
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
