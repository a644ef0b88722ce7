"""The time zones a query may name: those the storage engine knows (system.time_zones, read once
and kept) that Python's zoneinfo, which plans the query, knows as well.

Python alone is not enough: it accepts names such as `right/UTC` that ClickHouse refuses with
an error of its own, and ZoneInfo turns an over-long name into an OS error carrying a path.
"""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from civicmeter.core.store.connection import Storage, engine_time_zones
from civicmeter.query.arguments import STRING_CHARS, ArgumentError

MAX_CHARS = STRING_CHARS["time_zone"]


class TimeZones:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._known: frozenset[str] | None = None
        self._lock = asyncio.Lock()

    async def check(self, field: str, name: str) -> str:
        """`name` when a query may use it; ArgumentError naming `field` otherwise."""
        if len(name) > MAX_CHARS:
            raise ArgumentError(field, f"is longer than {MAX_CHARS} characters")
        known = self._known if self._known is not None else await self._load()
        if name not in known or not _python_knows(name):
            raise ArgumentError(field, f"{name!r} is not an IANA time zone this server knows")
        return name

    async def _load(self) -> frozenset[str]:
        async with self._lock:
            if self._known is None:
                self._known = await self._storage.run(engine_time_zones)
            return self._known


def _python_knows(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
