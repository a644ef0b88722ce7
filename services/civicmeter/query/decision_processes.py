"""The decision service in several processes on one port: `civicmeter decision` with
CIVICMETER_DECISION_PROCESSES above 1.

Why: a gRPC Python server answers its calls under one GIL, and gRPC's own per-call work (its
polling thread, the hand-offs to the call threads, the response) costs about half a
millisecond of CPU a call before any API work (the transport floor in
loadtests/guard/RESULTS.md). At 1,000 decisions/s one process is then busy three quarters of
the time, and a call's wait behind the calls ahead of it, not its own work, makes the tail.
Several processes each answer a share of the calls on a core of their own.

Each process is a whole decision server (`decision_server.serve`: the same API keys, policy,
budget state, audit log and health), bound to the same port with SO_REUSEPORT: the kernel
hands each new connection to one of them (by a hash of its addresses), so the calls spread by
connection. Many gateways, or a gateway with a few channels, spread over the processes; one
connection stays with one process. Per-process figures: the per-key rate limit
(CIVICMETER_DECISION_RATE_PER_KEY) and the WatchPolicy streams (CIVICMETER_DECISION_MAX_WATCHERS)
apply to each process; a Prometheus exporter (OTEL_METRICS_EXPORTER=prometheus) serves process
N on OTEL_EXPORTER_PROMETHEUS_PORT + N.

This process starts one storage process that all of them share (storage_process.start_shared:
the audit batches, budget reads and migrations of every server, one call at a time; on the
embedded engine, the one process that may open its directory), then the servers, and then only
watches them. SIGTERM or SIGINT is passed on to every server, which drains as it does alone;
the storage process ends once the last of them has flushed its audit rows. A server that ends
on its own (it crashed, or was killed) ends the others, as does the storage process's end, and
this process exits with its status (1 if it had none): the orchestrator restarts the whole,
since a server started again alone would have no pipe to the storage process.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType

from civicmeter.core.heap import steady_heap
from civicmeter.core.prctl import end_with_the_parent, name_process
from civicmeter.core.store.storage_process import STOP_SECONDS, StorageLink, start_shared

log = logging.getLogger("civicmeter.decision")
PROMETHEUS_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
DEFAULT_PROMETHEUS_PORT = 9464


def run(env: Mapping[str, str], log_level: str) -> int:
    """Serve until SIGTERM or SIGINT; the exit status: 0, or the status of a server that ended
    on its own."""
    from civicmeter.query import decision_server

    settings = decision_server.settings_from_env(env)  # configuration errors, once, here
    storage, pipes = start_shared(settings.clickhouse, settings.processes)
    servers: list[BaseProcess] = []
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for server in servers:
            if server.is_alive() and server.pid is not None:
                os.kill(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    context = multiprocessing.get_context("spawn")
    for index, pipe in enumerate(pipes):
        server = context.Process(
            target=_serve_one,
            args=(dict(env), log_level, index, pipe, os.getpid()),
            name=f"civicmeter-decision-{index}",
        )
        server.start()
        pipe.close()  # the server holds it now: its end closes the storage process's pipe
        servers.append(server)
    if stopping:  # signalled while the servers were starting
        stop()
    log.info("decision service: %d processes on port %d", len(servers), settings.grpc_port)
    status = _watch(servers, storage, stop, lambda: stopping)
    storage.join(STOP_SECONDS)
    if storage.is_alive():
        storage.kill()
        storage.join()
    return status


def _watch(
    servers: list[BaseProcess],
    storage: BaseProcess,
    stop: Callable[[], None],
    stopping: Callable[[], bool],
) -> int:
    """Wait for every server to end. The first server that ends unasked ends the others, and
    so does the storage process (without it, no call would be audited)."""
    status = 0
    running = {server.sentinel: server for server in servers}
    watched = {**running, storage.sentinel: storage}
    while running:
        for sentinel in multiprocessing.connection.wait(list(watched)):
            assert isinstance(sentinel, int)
            process = watched.pop(sentinel)
            running.pop(sentinel, None)
            process.join()
            code = process.exitcode or 0
            if not stopping():
                log.error(
                    "%s ended unasked (exit status %s): stopping the decision service",
                    process.name,
                    process.exitcode,
                )
                status = status or code or 1
                stop()
            elif code not in (0, -signal.SIGTERM):
                status = status or code
    return status


def _serve_one(
    env: dict[str, str], log_level: str, index: int, pipe: Connection, parent_pid: int
) -> None:
    """One server of the group (a spawned process): its storage through `pipe`."""
    from civicmeter.core.access.auth import ApiKeyError
    from civicmeter.core.config import ConfigError, env_port
    from civicmeter.core.runtime import configure_logging, run_until_signalled
    from civicmeter.core.telemetry.setup import setup_telemetry
    from civicmeter.policy.organization import PolicyError
    from civicmeter.query import decision_server

    name_process(f"cm-decision-{index}")
    steady_heap()
    end_with_the_parent(parent_pid)
    configure_logging(log_level)
    if env.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "prometheus":
        base = env_port(env, "OTEL_EXPORTER_PROMETHEUS_PORT", DEFAULT_PROMETHEUS_PORT)
        env = {**env, PROMETHEUS_PORT: str(base + index)}
    try:
        setup_telemetry("decision", env)
        settings = decision_server.settings_from_env(env)
        storage = StorageLink(pipe)
        run_until_signalled(lambda stop: decision_server.serve(settings, storage, stop))
    except (ConfigError, PolicyError, ApiKeyError) as exc:
        print(f"civicmeter: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
