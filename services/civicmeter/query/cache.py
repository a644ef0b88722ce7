"""Answers reused for a short while: dashboards ask the same question many times a second,
and a rollup answer a second old is as good as a fresh one for them.

Keys are the whole query, tenant scope included, so no caller is ever served another
organisation's answer. Concurrent askers of a question not yet answered wait for one
computation instead of each starting their own (no thundering herd when an answer expires).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class AnswerCache(Generic[K, V]):
    def __init__(self, ttl_seconds: float, capacity: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.capacity = capacity
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def get_or_compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        cached = self.get(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the waiters, if any, get it; nobody must retrieve it twice
            raise
        finally:
            del self._inflight[key]
        self.put(key, value)
        future.set_result(value)
        return value

    def get(self, key: K) -> V | None:
        if self.ttl <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
