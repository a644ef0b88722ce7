"""Answers reused for a short while: dashboards ask the same question many times a second,
and a rollup answer a second old is as good as a fresh one for them.

Keys are the whole query, tenant scope included, so no caller is ever served another
organisation's answer. Concurrent askers of a question not yet answered wait for one
computation instead of each starting their own (no thundering herd when an answer expires).

An answer given with a `refresh` function is recomputed in the background shortly before it
expires, if it is asked for then: a question asked all the time rarely waits for ClickHouse,
and no answer is served older than the time to live. The refresh starts as long before expiry
as the last computation took (at least a tenth, at most a quarter of the time to live): enough
for it to finish in time, without recomputing much more often than the time to live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K")
V = TypeVar("V")
Compute = Callable[[], Awaitable[V]]

log = logging.getLogger("civicmeter.query.cache")


class _Entry(NamedTuple, Generic[V]):
    expires: float
    refresh_at: float
    value: V
    refresh: Compute[V] | None


class AnswerCache(Generic[K, V]):
    def __init__(
        self,
        ttl_seconds: float,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._refreshes: set[asyncio.Task[None]] = set()

    async def get_or_compute(
        self, key: K, compute: Compute[V], refresh: Compute[V] | None = None
    ) -> V:
        """The cached answer, else the one being computed, else `compute()`'s.

        `refresh` recomputes the answer outside any call (no call's deadline or abort), for
        the background refresh; without it the answer simply expires.
        """
        cached = self.get(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._fill(key, self._claim(key), compute, refresh)

    def get(self, key: K) -> V | None:
        """The cached answer, if any; starts its background refresh when it is due."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if entry.expires <= now:
            del self._entries[key]
            return None
        if entry.refresh is not None and entry.refresh_at <= now and key not in self._inflight:
            # Claimed now, not when the task first runs: the next caller must not start another.
            future = self._claim(key)
            task = asyncio.get_running_loop().create_task(
                self._background(key, future, entry.refresh)
            )
            self._refreshes.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._refreshes.discard)
        return entry.value

    def put(
        self, key: K, value: V, refresh: Compute[V] | None = None, took_seconds: float = 0.0
    ) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        lead = min(self.ttl / 4, max(self.ttl / 10, took_seconds))
        self._entries[key] = _Entry(now + self.ttl, now + self.ttl - lead, value, refresh)
        self._entries.move_to_end(key)
        # Expired answers go as new ones come, oldest first (the order of expiry: one time to
        # live for all). A question not asked again (a window ending now, the next page) would
        # otherwise stay until the capacity is reached: answers of up to a thousand lines,
        # ~150 KB each, growing the process by megabytes a minute under a polling dashboard.
        while self._entries and (
            next(iter(self._entries.values())).expires <= now or len(self._entries) > self.capacity
        ):
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        """Answers held, expired ones not yet dropped included."""
        return len(self._entries)

    def _claim(self, key: K) -> asyncio.Future[V]:
        """Register the computation of `key`, so concurrent askers wait for it."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        return future

    async def _fill(
        self,
        key: K,
        future: asyncio.Future[V],
        compute: Compute[V],
        refresh: Compute[V] | None,
    ) -> V:
        started = self._clock()
        try:
            value = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the waiters, if any, get it; nobody must retrieve it twice
            raise
        finally:
            del self._inflight[key]
        self.put(key, value, refresh, self._clock() - started)
        future.set_result(value)
        return value

    async def _background(self, key: K, future: asyncio.Future[V], refresh: Compute[V]) -> None:
        try:
            await self._fill(key, future, refresh, refresh)
        except Exception:
            # The answer in the cache stays until it expires; then a caller computes it anew.
            log.warning("refreshing a cached answer failed", exc_info=True)
