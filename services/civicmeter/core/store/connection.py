"""ClickHouse access through clickhouse-connect: one code path, two backends.

`interface="chdb"` runs the real ClickHouse engine in-process on a data directory (one process
may open a path at a time, so in embedded mode the storage services share a process and a
client); "http"/"https" talk to a server. Schema comes from the migrations (store.migrations).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from google.protobuf.descriptor import Descriptor

from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.protobuf_schema import standalone_schema
from civicmeter.core.store.timing import time_operations

T = TypeVar("T")
# The embedded engine's caches, sized for a process that shares its machine (the server's
# defaults assume one of its own: 5 GiB of marks, 100 MiB of query conditions). Both keep the
# entries of parts merged away until their bound, so the bound is what they grow to. Server
# settings: they take effect when the first client of the process opens the engine.
ENGINE_CACHES = {"mark_cache_size": 256 << 20, "query_condition_cache_size": 4 << 20}
# The query-condition cache is not used at all: it remembers which granules of a part a
# filter skipped, for the same filter on the same part, while this workload's filters move
# with the clock and its parts are merged away within minutes. Under the soak's load it only
# filled, by ~1,500 entries a minute, each ~3 times the 64 bytes it counts.
ENGINE_QUERY_SETTINGS = {"use_query_condition_cache": 0}
# The engine's server configuration beyond its caches (what it says and why: in the file).
ENGINE_CONFIG = Path(__file__).with_name("embedded_engine.xml")
_embedded: dict[str, Storage] = {}
_embedded_lock = threading.Lock()


class StorageCalls(Protocol):
    """What a service needs of its storage: run a function on a client, one call at a time
    (Storage, in this process; storage_process.StorageProcess, in a child process)."""

    def call(self, fn: Callable[[Client], T]) -> T: ...

    async def run(self, fn: Callable[[Client], T]) -> T: ...


class Storage:
    """A client and the lock that serialises its use from worker threads.

    clickhouse-connect clients are blocking; services call them through `run`, which moves
    the call off the event loop. One client serves one call at a time (an HTTP session, or the
    embedded engine shared by every service of the process).
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()

    def call(self, fn: Callable[[Client], T]) -> T:
        with self._lock:
            return fn(self.client)

    async def run(self, fn: Callable[[Client], T]) -> T:
        return await asyncio.to_thread(self.call, fn)


def insert_from_protobuf(
    client: Client,
    target: str,
    select: str,
    structure: str,
    message: Descriptor,
    stream: bytes,
    settings: Mapping[str, object] | None = None,
    where: str = "1",
) -> None:
    """INSERT INTO `target` SELECT `select` FROM the records in `stream`, parsed by ClickHouse,
    WHERE `where`.

    `stream` is a ProtobufList stream: a length-delimited envelope, a batch message whose
    repeated field 1 holds `message`s (as a usage.rated record does). `structure` names the
    fields as ClickHouse reads them. A server gets the bytes as the insert's body (`input()`);
    the embedded engine reads them from a file.
    """
    schema = {
        "format_schema_source": "string",
        "format_schema": standalone_schema(message),
        "format_schema_message_name": message.name,
        **(settings or {}),
    }
    if type(client).__name__ == "ChdbClient":
        with tempfile.NamedTemporaryFile(prefix="civicmeter-", suffix=".pb") as records:
            records.write(stream)
            records.flush()
            client.command(
                f"INSERT INTO {target} SELECT {select} FROM "
                f"file({_literal(records.name)}, 'ProtobufList', {_literal(structure)}) "
                f"WHERE {where}",
                settings=schema,
            )
        return
    client.raw_insert(
        f"{target} SELECT {select} FROM input({_literal(structure)}) WHERE {where}",
        insert_block=stream,
        fmt="ProtobufList",
        settings=schema,
    )


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def deadline_settings(max_seconds: float | None) -> dict[str, object] | None:
    """Query settings that stop a query in ClickHouse at the caller's remaining deadline, so a
    query the caller gave up on does not run on (None: no deadline)."""
    return {"max_execution_time": max(1, math.ceil(max_seconds))} if max_seconds else None


def engine_time_zones(client: Client) -> frozenset[str]:
    """The time zones the engine knows (system.time_zones)."""
    rows = client.query("SELECT time_zone FROM system.time_zones").result_rows
    return frozenset(str(row[0]) for row in rows)


def open_storage(settings: ClickHouseSettings) -> Storage:
    """Storage on settings.database. Embedded storage is one per data path per process."""
    if settings.interface == "chdb":
        path = str(Path(settings.path).resolve())
        with _embedded_lock:
            storage = _embedded.get(path)
            if storage is None:
                storage = Storage(connect(settings))
                _embedded[path] = storage
            return storage
    return Storage(connect(settings))


def connect(settings: ClickHouseSettings) -> Client:
    """A new client on settings.database, created if missing."""
    if settings.interface == "chdb":
        Path(settings.path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(
            interface="chdb",
            path=str(settings.path),
            chdb_options={**ENGINE_CACHES, "config-file": str(ENGINE_CONFIG)},
            settings=ENGINE_QUERY_SETTINGS,
        )
        client.command(f"CREATE DATABASE IF NOT EXISTS {_ident(settings.database)}")
        client.database = settings.database
        return time_operations(client)
    server: dict[str, Any] = {
        "interface": settings.interface,
        "host": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.password,
    }
    if settings.ca_cert:
        server["ca_cert"] = settings.ca_cert
    bootstrap = clickhouse_connect.get_client(**server)
    bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {_ident(settings.database)}")
    bootstrap.close()
    return time_operations(clickhouse_connect.get_client(**server, database=settings.database))


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"CLICKHOUSE_DATABASE {name!r} must be alphanumeric")
    return name
