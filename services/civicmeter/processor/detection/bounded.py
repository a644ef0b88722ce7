"""Containers with a fixed capacity, for detection state that must not grow without end.

Eviction is by insertion or use order only (never by wall clock), so the same input in the
same order leaves the same state.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentSet(Generic[K]):
    """The last `capacity` distinct items added; the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._order: deque[K] = deque()
        self._members: set[K] = set()

    def add(self, item: K) -> bool:
        """Remember `item`; False when it was already remembered."""
        if item in self._members:
            return False
        self._members.add(item)
        self._order.append(item)
        if len(self._order) > self.capacity:
            self._members.discard(self._order.popleft())
        return True

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._members)


class LruMap(Generic[K, V]):
    """A mapping of at most `capacity` entries; the least recently used is evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The entry, marked as just used; None when absent."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The entry without marking it used."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first."""
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
