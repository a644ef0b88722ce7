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

Several processes of one service (the decision service's `CIVICMETER_DECISION_PROCESSES`)
share one storage process, started by their parent with start_shared: one pipe per process,
each wrapped in StorageLink there. On the embedded engine this is also what lets them write
one database at all (one process opens its directory at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.heap import steady_heap
from civicmeter.core.prctl import name_process

log = logging.getLogger(__name__)

T = TypeVar("T")
STOP_SECONDS = 10.0  # how long close() waits for the child to end after its pipe closes


class StorageError(RuntimeError):
    """A function sent to the storage process did not return (it raised, or the child died)."""


class _StorageEndedError(StorageError):
    """The storage process ended (or closed its pipe) before it answered."""


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


def _serve(settings: ClickHouseSettings, pipes: list[Connection]) -> None:
    """The child: run each function received on any of `pipes` on the client, answer on the
    same pipe (ok, value or reason), one call at a time; end when every pipe is closed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    name_process("cm-storage")
    steady_heap()
    _yield_to_the_parent()
    from civicmeter.core.store.connection import connect  # the child's own imports

    client = connect(settings)
    open_pipes = list(pipes)
    while open_pipes:
        for pipe in multiprocessing.connection.wait(open_pipes):
            assert isinstance(pipe, Connection)
            try:
                fn = pipe.recv()
            except (EOFError, OSError):  # that process closed its end, or died
                open_pipes.remove(pipe)
                pipe.close()
                continue
            try:
                answer: tuple[bool, Any] = (True, fn(client))
            except Exception as exc:  # noqa: BLE001 (the caller is told, and logs it)
                answer = (False, f"{type(exc).__name__}: {exc}")
            try:
                pipe.send(answer)
            except (EOFError, OSError):
                continue  # the caller is gone; its EOF comes next
            except Exception as exc:  # noqa: BLE001 (an unpicklable result is still answered)
                pipe.send((False, f"the result could not be sent back: {exc}"))


def start_shared(
    settings: ClickHouseSettings, processes: int
) -> tuple[multiprocessing.process.BaseProcess, list[Connection]]:
    """A storage process serving `processes` other processes (one pipe each, answered one
    call at a time): for several processes of one service on the embedded engine, which one
    process opens at a time. Hand each process one of the pipes (a Process argument) and wrap
    it in StorageLink there, then close it here: the storage process ends when every one of
    them has closed its pipe or died."""
    context = multiprocessing.get_context("spawn")
    ends = [context.Pipe() for _ in range(processes)]
    process = context.Process(
        target=_serve,
        args=(settings, [child for _, child in ends]),
        name="civicmeter-storage",
        daemon=False,  # its callers may be other children of the starting process
    )
    process.start()
    for _, child in ends:
        child.close()
    return process, [parent for parent, _ in ends]


class StorageLink:
    """Storage's `call`/`run` over a pipe to a storage process (start_shared), one call at a
    time. The storage process is not this process's to restart: a call it cannot answer
    raises StorageError, as StorageProcess's do."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def call(self, fn: Callable[[Client], T]) -> T:
        with self._lock:
            return _ask(self._pipe, fn)

    async def run(self, fn: Callable[[Client], T]) -> T:
        return await asyncio.to_thread(self.call, fn)

    def close(self) -> None:
        with self._lock:
            self._pipe.close()


def _ask(pipe: Connection, fn: Callable[[Client], T]) -> T:
    try:
        pipe.send(fn)
        ok, value = pipe.recv()
    except (EOFError, OSError) as exc:
        raise _StorageEndedError("the storage process ended during the call") from exc
    if not ok:
        raise StorageError(value)
    return value  # type: ignore[no-any-return]


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
            target=_serve, args=(self._settings, [child]), name="civicmeter-storage", daemon=True
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
                return _ask(pipe, fn)
            except _StorageEndedError:
                self._end_child()
                raise

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
