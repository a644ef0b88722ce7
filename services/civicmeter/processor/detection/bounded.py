"""Containers with a fixed capacity, for detection state that must not grow without end.

Eviction is by insertion or use order only (never by wall clock), so the same input in the
same order leaves the same state.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat, starmap
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

    def add_new(self, items: Sequence[K]) -> bool:
        """Remember every one of `items`, as `add` of each in turn would, when none is
        remembered and none repeats; False (nothing changed) otherwise."""
        members = self._members
        if not members.isdisjoint(items):
            return False
        before = len(members)
        members.update(items)
        if len(members) - before != len(items):  # one repeats: none was remembered before
            members.difference_update(items)
            return False
        order = self._order
        order.extend(items)
        excess = len(order) - self.capacity
        if excess > 0:  # the oldest go, as they would one by one
            members.difference_update(starmap(order.popleft, repeat((), excess)))
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

    @property
    def lookup(self) -> Callable[[K], V | None]:
        """`peek` as the mapping's own get, for loops over many keys that mark their use
        afterwards (`touch`)."""
        return self._entries.get

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def put_all(self, entries: Mapping[K, V]) -> None:
        """`put` of each entry in turn (the same entries stay, in the same order)."""
        mine = self._entries
        mine.update(entries)
        deque(map(mine.move_to_end, entries), maxlen=0)
        while len(mine) > self.capacity:
            mine.popitem(last=False)

    def touch(self, keys: Iterable[K]) -> None:
        """Mark each of `keys` that is present as just used, in turn (as `get` would)."""
        mine = self._entries
        deque(map(mine.move_to_end, filter(mine.__contains__, keys)), maxlen=0)

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first."""
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
