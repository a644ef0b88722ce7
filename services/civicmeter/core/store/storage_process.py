"""ClickHouse work in a child process, for a service whose calls must not wait on it.

A process that answers calls in a few milliseconds (the decision service) shares one GIL
between its call threads and its storage work. Through clickhouse-connect much of that work is
Python (rows to columns, results to values); on the embedded engine the engine itself runs in
the process too. A batch of audit rows or a budget read then takes the GIL from the calls for
milliseconds at a time: measured at 1,000 decisions/s, the slow calls came in bursts a second
apart, the audit writer's period (loadtests/guard/RESULTS.md).

StorageProcess has Storage's `call`/`run` and runs each function in a child process that owns
the client; the parent only pickles the function with its arguments and the result. The
functions must therefore be picklable: module-level functions, or functools.partial of them
(not lambdas or closures). One call at a time, as with Storage's lock.

The child is started with "spawn" (never a fork of a process with gRPC's threads running), on
the first call or when a call finds it gone; it ignores SIGINT and SIGTERM (the parent decides
when storage work ends: after its last flush) and exits when the parent closes its end of the
pipe or dies. A call the child cannot answer (its function raised, or the child died) raises
StorageError with the cause; the callers keep their work for the next try (the audit queue) or
their last result (budget states).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from civicmeter.core.config import ClickHouseSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_SECONDS = 10.0  # how long close() waits for the child to end after its pipe closes


class StorageError(RuntimeError):
    """A function sent to the storage process did not return (it raised, or the child died)."""


def _yield_to_the_parent() -> None:
    """Run this process's threads, and those the engine starts later (they inherit it), at
    the lowest priority (SCHED_IDLE): its work is a background batch, and on a machine with
    few cores a burst of it (the embedded engine inserting a batch or reading the budgets on
    all cores for tens of milliseconds) would otherwise keep the calls' threads waiting for
    a core. Idle-priority work still runs whenever a core is free, and gets a small share
    when none is: on a machine kept busy for long by other work, the audit batches wait
    (the queue holds about 100 s of calls) and a budget state may be read later than its
    refresh period."""
    if not hasattr(os, "SCHED_IDLE"):
        return  # not Linux
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))


def _serve(settings: ClickHouseSettings, pipe: Connection) -> None:
    """The child: run each function received on the client, answer (ok, value or reason)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _yield_to_the_parent()
    from civicmeter.core.store.connection import connect  # the child's own imports

    client = connect(settings)
    while True:
        try:
            fn = pipe.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        try:
            answer: tuple[bool, Any] = (True, fn(client))
        except Exception as exc:  # noqa: BLE001 (the caller is told, and logs it)
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            pipe.send(answer)
        except Exception as exc:  # noqa: BLE001 (an unpicklable result is still answered)
            pipe.send((False, f"the result could not be sent back: {exc}"))


class StorageProcess:
    """Storage's `call`/`run`, executed by a child process owning the ClickHouse client."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None
        self.starts = 0  # child processes started (more than one: a child died)

    def _started(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._pipe is not None:
            return self._pipe
        self._end_child()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(self._settings, child), name="civicmeter-storage", daemon=True
        )
        process.start()
        child.close()
        self._process, self._pipe = process, parent
        self.starts += 1
        if self.starts > 1:
            log.warning("storage process started again (%d starts)", self.starts)
        return parent

    def call(self, fn: Callable[[Client], T]) -> T:
        with self._lock:
            pipe = self._started()
            try:
                pipe.send(fn)
                ok, value = pipe.recv()
            except (EOFError, OSError) as exc:
                self._end_child()
                raise StorageError("the storage process ended during the call") from exc
        if not ok:
            raise StorageError(value)
        return value  # type: ignore[no-any-return]

    async def run(self, fn: Callable[[Client], T]) -> T:
        return await asyncio.to_thread(self.call, fn)

    def close(self) -> None:
        """End the child once the calls in progress are answered."""
        with self._lock:
            self._end_child()

    def _end_child(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._process is not None:
            self._process.join(STOP_SECONDS)  # the closed pipe ends it
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
