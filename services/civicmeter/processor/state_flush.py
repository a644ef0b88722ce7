"""Detector state written once per interval, coalesced per key, before the offsets it covers.

A micro-batch of the benchmark load changes the detector state of ~4,000 users, and the same
users come back in the next batches. Writing each batch's state (one record per touched key)
cost more processor CPU than the detectors themselves. So an agent hands each batch, once
everything produced from it is acknowledged by Kafka, to a StateFlush, which keeps the
batch's records unacknowledged (faust commits only the offsets of acknowledged records) and,
every `interval` seconds or when too much is pending, writes the state of every key changed
since the last write (the engine keeps the set: take_state; last value wins), waits for Kafka
to acknowledge it, and only then acknowledges the records. A key changed by many batches is
written once per flush.

The guarantees of detector_state.py hold as with a write per batch, since a record's offset
is committed only after the state counting it is durable: a crash after a write but before
the commit replays records the state already counts (each user's position makes them a
no-op); a crash before a write replays records whose state was never written, counted again
from the state before them.

Outputs other agents wait for (the users' day totals the organisation-wide detectors read)
go out on a shorter `publish_interval`, and always before the state that counts them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

# At most this many records (each a few hundred events) wait for their state to be written:
# they are replayed after a crash, and held in memory until then.
MAX_PENDING_RECORDS = 2048
# At most this many keys' state waits to be written, whatever the interval.
MAX_PENDING_KEYS = 200_000
# How often an idle agent's pending state is looked at (and written during a rebalance).
TICK_SECONDS = 0.1


class StateFlush:
    """One agent's pending state and the records it covers. Every method but `run` is called
    with `lock` held, the lock the agent holds from a batch's processing until its outputs
    are acknowledged: a flush never writes state counting a batch whose outputs are not."""

    def __init__(
        self,
        write: Callable[[], Awaitable[None]],
        ack: Callable[[Any], Awaitable[Any]],
        *,
        interval: float,
        publish: Callable[[], Awaitable[None]] | None = None,
        publish_interval: float = 1.0,
        pending_keys: Callable[[], int] = lambda: 0,
        max_records: int = MAX_PENDING_RECORDS,
        max_keys: int = MAX_PENDING_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`write`: write the state changed since the last call and wait for Kafka to
        acknowledge it. `ack`: acknowledge one record to faust. `publish`: send the outputs
        that may wait up to `publish_interval` seconds (and wait for their acknowledgement).
        `pending_keys`: how many keys' state is waiting."""
        self.lock = asyncio.Lock()
        self._write = write
        self._ack = ack
        self._publish = publish
        self.interval = interval
        self.publish_interval = publish_interval
        self._pending_keys = pending_keys
        self._max_records = max_records
        self._max_keys = max_keys
        self._clock = clock
        self._events: list[Any] = []  # processed records whose state is not written yet
        self._oldest: float | None = None  # when the oldest of them was processed
        self._unpublished: float | None = None  # when the oldest unpublished output came
        self.flushes = 0  # state writes done

    @property
    def pending(self) -> int:
        """Records processed whose state is not written yet."""
        return len(self._events)

    async def processed(self, events: Sequence[Any]) -> None:
        """A batch whose outputs are acknowledged: its records wait for their state, which
        is written now if due."""
        now = self._clock()
        if events:
            self._events.extend(events)
            if self._oldest is None:
                self._oldest = now
            if self._unpublished is None:
                self._unpublished = now
        await self.flush_if_due()

    async def flush_if_due(self, *, urgent: bool = False) -> None:
        """Write the pending state when its oldest record waited `interval`, too much is
        pending, or `urgent` (a rebalance: the partitions may go elsewhere); else publish what
        waited `publish_interval`."""
        if self._oldest is None:
            return
        now = self._clock()
        if (
            urgent
            or now - self._oldest >= self.interval
            or len(self._events) >= self._max_records
            or self._pending_keys() >= self._max_keys
        ):
            await self.flush()
        elif (
            self._publish is not None
            and self._unpublished is not None
            and now - self._unpublished >= self.publish_interval
        ):
            await self._publish()
            self._unpublished = None

    async def flush(self) -> None:
        """Publish, write the state, then acknowledge the records it covers."""
        if self._publish is not None:
            await self._publish()
            self._unpublished = None
        await self._write()
        events, self._events, self._oldest = self._events, [], None
        for event in events:
            await self._ack(event)
        self.flushes += 1

    async def run(self, urgent: Callable[[], bool]) -> None:
        """Flush what is due while no batch comes (an idle or paused agent), at once while
        `urgent()`. Runs until cancelled; cancel it with `lock` held so no flush is cut."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if self._oldest is not None:
                async with self.lock:
                    await self.flush_if_due(urgent=urgent())
