"""ClickHouse reads bounded by the gRPC caller's remaining deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from civicmeter.core.store.connection import Storage

T = TypeVar("T")


async def read_within_deadline(
    storage: Storage,
    context: grpc.aio.ServicerContext,
    read: Callable[[Client, float | None], T],
) -> T:
    """`read(client, seconds left)` on the storage; a query ClickHouse stops at the deadline
    ends the call with DEADLINE_EXCEEDED, so a query the client gave up on does not run on."""
    remaining = context.time_remaining()
    try:
        return await storage.run(lambda client: read(client, remaining))
    except DatabaseError as exc:
        if "TIMEOUT_EXCEEDED" not in str(exc):
            raise
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the query ran past the deadline")
        raise  # abort raises; this keeps the type checker informed
