"""The whole civicmeter pipeline on this machine: each service in its own process.

ingest, processor, and sink+query (one process, as embedded ClickHouse requires), pointed at
a Kafka broker, writing to an embedded ClickHouse data path under `workdir`. Used by the
demo, the integration tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from civicmeter.core.access.auth import hash_token, new_token

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PRICES = REPO / "config" / "prices.yaml"
DEFAULT_POLICIES = REPO / "config" / "policies.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StackError(RuntimeError):
    pass


@dataclass
class LocalStack:
    kafka_bootstrap: str
    workdir: Path
    prices_file: Path = DEFAULT_PRICES
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ingest_http_port: int = field(default_factory=free_port)
    ingest_grpc_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    # The decision service's own port (in the storage process: the embedded ClickHouse is one
    # process's; against a ClickHouse server it runs as `civicmeter decision` on its own).
    decision_grpc_port: int = field(default_factory=free_port)
    services: tuple[str, ...] = ("ingest", "processor", "storage")
    # Processor processes in one consumer group: Kafka spreads the partitions over them.
    processors: int = 1
    # Ingest authenticates gateways with a key file the stack writes, holding one gateway key
    # for every organisation; senders present `gateway_token` (see `ingest_headers`). False:
    # ingest runs open, as in development. An extra_env CIVICMETER_INGEST_KEYS_FILE wins.
    gateway_keys: bool = True
    gateway_token: str = field(default_factory=new_token)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _specs: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_http_port}"

    @property
    def query_target(self) -> str:
        return f"127.0.0.1:{self.query_grpc_port}"

    @property
    def decision_target(self) -> str:
        return f"127.0.0.1:{self.decision_grpc_port}"

    @property
    def ingest_grpc_target(self) -> str:
        return f"127.0.0.1:{self.ingest_grpc_port}"

    @property
    def ingest_headers(self) -> dict[str, str]:
        """The HTTP header that authenticates a sender to this stack's ingest."""
        return {"Authorization": f"Bearer {self.gateway_token}"} if self.gateway_keys else {}

    @property
    def ingest_metadata(self) -> tuple[tuple[str, str], ...]:
        """The same credential as gRPC call metadata."""
        return tuple((k.lower(), v) for k, v in self.ingest_headers.items())

    @property
    def gateway_keys_file(self) -> Path:
        return self.workdir / "gateway-keys.yaml"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "CLICKHOUSE_INTERFACE": "chdb",
            "CLICKHOUSE_PATH": str(self.workdir / "chdb"),
            "CIVICMETER_PRICES_FILE": str(self.prices_file),
            "CIVICMETER_POLICY_FILE": str(DEFAULT_POLICIES),
            "CIVICMETER_PROCESSOR_DATA_DIR": str(self.workdir / "processor"),
            "CIVICMETER_INGEST_HTTP_PORT": str(self.ingest_http_port),
            "CIVICMETER_INGEST_GRPC_PORT": str(self.ingest_grpc_port),
            "CIVICMETER_QUERY_GRPC_PORT": str(self.query_grpc_port),
            "CIVICMETER_DECISION_GRPC_PORT": str(self.decision_grpc_port),
            "PYTHONUNBUFFERED": "1",
        }
        if self.gateway_keys:
            env["CIVICMETER_INGEST_KEYS_FILE"] = str(self.gateway_keys_file)
        env.update(self.extra_env)
        return env

    def _member_id(self, name: str) -> str:
        """A static group member id: the same across restarts of this stack's service, unique
        to this stack, so that stacks sharing a broker and group ids never fence each other."""
        stack = hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:12]
        return f"{name}-{stack}"

    def start(self, timeout: float = 90.0) -> Self:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        if self.gateway_keys:
            self._write_gateway_keys()
        commands = {
            "ingest": ["ingest"],
            "processor": ["processor"],
            "storage": ["serve", "sink", "query", "decision", "notifier", "billing"],
        }
        for name in self.services:
            if name == "processor":
                for n in range(self.processors):
                    member = f"processor-{n + 1}"  # its data dir and static group member id
                    self._spawn(
                        "processor" if n == 0 else member,
                        commands[name],
                        {
                            "CIVICMETER_PROCESSOR_DATA_DIR": str(self.workdir / member),
                            "KAFKA_GROUP_INSTANCE_ID": self._member_id(member),
                        },
                    )
            else:
                self._spawn(
                    name, commands[name], {"KAFKA_GROUP_INSTANCE_ID": self._member_id(name)}
                )
        deadline = time.monotonic() + timeout
        if "ingest" in self.services:
            self._wait(lambda: self._http_ok(f"{self.ingest_url}/healthz"), "ingest", deadline)
        if "storage" in self.services:
            self._wait(lambda: self._grpc_serving(self.query_target), "query", deadline)
            self._wait(lambda: self._grpc_serving(self.decision_target), "decision", deadline)
        return self

    def _write_gateway_keys(self) -> None:
        """One gateway key for every organisation: the stack's senders replay all of them."""
        key = {"id": "local-gateways", "role": "gateway", "organization_id": "*",
               "sha256": hash_token(self.gateway_token)}  # fmt: skip
        self.gateway_keys_file.write_text(yaml.safe_dump({"keys": [key]}, sort_keys=False))

    def pids(self) -> dict[str, int]:
        """Process ids of the running services, by name (ingest, processor, storage)."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    def kill(self, name: str) -> None:
        """SIGKILL one service's process group, as a crash would, and reap it."""
        proc = self._procs.pop(name)
        with contextlib.suppress(ProcessLookupError):  # already killed by the caller
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def exited(self) -> dict[str, int]:
        """Services that exited on their own, with their exit codes."""
        return {name: code for name, p in self._procs.items() if (code := p.poll()) is not None}

    def restart(self, name: str) -> None:
        """Start a killed service again, with the arguments and environment it had."""
        args, env = self._specs[name]
        self._spawn(name, args, env)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self._specs[name] = (args, dict(env or {}))
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            [sys.executable, "-m", "civicmeter", *args],
            env={**self.env(), **(env or {})},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def _wait(self, ready: Callable[[], bool], what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            if ready():
                return
            time.sleep(0.2)
        raise StackError(f"{what} did not become ready in time")

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    @staticmethod
    def _grpc_serving(target: str) -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every service, wait for an orderly exit, SIGKILL stragglers."""
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for name, proc in self._procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        for log in self._logs:
            log.close()
        self._procs.clear()
        self._logs.clear()
        return codes

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
