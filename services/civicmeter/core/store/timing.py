"""db.client.operation.duration for every ClickHouse call of a clickhouse-connect client.

The client's public query and insert methods are wrapped on the instance, so every caller
(sink, query, notifier, billing, migrations) is timed without changing. Methods of the client
call one another (query_df calls query); only the outermost call of a thread is recorded.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from opentelemetry import metrics

from civicmeter.core.telemetry.metrics import db_operation_duration

# Methods taking SQL first, whose operation is the statement's first keyword.
_STATEMENTS = ("query", "raw_query", "query_np", "query_df", "query_arrow", "query_df_arrow",
               "command")  # fmt: skip
_INSERTS = ("insert", "insert_df", "insert_arrow", "insert_df_arrow", "raw_insert")
_active = threading.local()


def time_operations(client: Client, meter: metrics.Meter | None = None) -> Client:
    """Wrap `client`'s operations to record their duration (global meter unless given one)."""
    duration = db_operation_duration(meter or metrics.get_meter("civicmeter.clickhouse"))
    for name in (*_STATEMENTS, *_INSERTS):
        method = getattr(client, name, None)
        if method is not None:
            fixed = "insert" if name in _INSERTS else None
            setattr(client, name, _timed(method, duration, fixed))
    return client


def operation_name(sql: object) -> str:
    """The operation of a statement: its first keyword, lower case (a WITH query selects)."""
    words = str(sql).lstrip(" \t\r\n(").split(None, 1)
    word = words[0].lower() if words else ""
    if word == "with":
        return "select"
    return word if word.isalpha() else "other"


def _timed(
    method: Callable[..., Any], duration: metrics.Histogram, fixed: str | None
) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_active, "depth", 0):
            return method(*args, **kwargs)
        _active.depth = 1
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            _active.depth = 0
            sql = args[0] if args else kwargs.get("query", kwargs.get("cmd", ""))
            duration.record(
                time.perf_counter() - started,
                {
                    "db.system.name": "clickhouse",
                    "db.operation.name": fixed or operation_name(sql),
                },
            )

    return timed
