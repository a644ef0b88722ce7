"""Questions localkafka asks a running broker, through aiokafka's admin client.

Readiness (does the cluster metadata list a broker?) and topic creation (create, then wait
until every partition has a leader).  The callers are synchronous (``LocalKafka.start``,
scripts, tests), so each call runs its own event loop, on a helper thread when the calling
thread already runs one (an async test starting a broker).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

__all__ = ["broker_count", "create_topics", "run_sync"]

_CLIENT_ID: Final[str] = "localkafka"
# The client waits this much longer than the broker is told to, so the broker's answer wins.
_CLIENT_MARGIN_SECONDS: Final[float] = 5.0

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="localkafka") as pool:
        return pool.submit(asyncio.run, coro).result()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@asynccontextmanager
async def _admin(bootstrap_servers: str, wait_seconds: float) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id=_CLIENT_ID,
        request_timeout_ms=_ms(wait_seconds),
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


def broker_count(bootstrap_servers: str, timeout: float) -> int:
    """How many brokers the cluster metadata lists (0 while none has registered yet).

    Raises ``ConnectionError`` (an ``OSError``) while the bootstrap server does not answer.
    A plain TCP connect comes first: while the JVM is still starting, aiokafka would log
    an error for every refused poll.
    """
    host, _, port = bootstrap_servers.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass
    try:
        return run_sync(_broker_count(bootstrap_servers, timeout))
    except KafkaError as exc:
        raise ConnectionError(f"{bootstrap_servers}: {exc}") from exc


async def _broker_count(bootstrap_servers: str, wait_seconds: float) -> int:
    async with _admin(bootstrap_servers, wait_seconds) as admin:
        cluster: dict[str, Any] = await admin.describe_cluster()
    return len(cluster["brokers"])


def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = True,
    timeout: float = 30.0,
) -> None:
    """Create topics and return once every partition has a leader.

    An existing topic is fine when ``exist_ok`` (its partition count is not changed).
    Raises ``RuntimeError`` naming each topic the broker refused and Kafka's reason, or
    the topics still without a leader after ``timeout`` seconds.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    new = [
        NewTopic(name, partitions, replication_factor, topic_configs=dict(config or {}))
        for name in wanted
    ]
    run_sync(_create_topics(bootstrap_servers, new, exist_ok, timeout))


async def _create_topics(
    bootstrap_servers: str, new: list[NewTopic], exist_ok: bool, wait_seconds: float
) -> None:
    deadline = time.monotonic() + wait_seconds
    wanted: list[str] = [topic.name for topic in new]
    async with _admin(bootstrap_servers, wait_seconds + _CLIENT_MARGIN_SECONDS) as admin:
        response = await admin.create_topics(new, timeout_ms=_ms(wait_seconds))
        failures = []
        # v0 answers (topic, code); later versions add the broker's message.
        for topic, code, *message in response.topic_errors:
            if code == 0 or (exist_ok and code == TopicAlreadyExistsError.errno):
                continue
            reason = " ".join([f"{for_code(code).message} ({code})", *filter(None, message)])
            failures.append(f"{topic}: {reason}")
        if failures:
            raise RuntimeError("creating topics failed: " + "; ".join(failures))
        while True:
            described: list[dict[str, Any]] = await admin.describe_topics(wanted)
            leaders = {
                topic["topic"]: [partition["leader"] for partition in topic["partitions"]]
                for topic in described
                if topic["error_code"] == 0
            }
            pending = [
                name
                for name in wanted
                if not leaders.get(name) or any(leader < 0 for leader in leaders[name])
            ]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"topics without leaders after {wait_seconds}s: {pending}")
            await asyncio.sleep(0.05)
