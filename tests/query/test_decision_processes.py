"""`civicmeter decision` in several processes on one port (CIVICMETER_DECISION_PROCESSES):
connections spread over the servers, every call of every server audited in the one database
of the storage process they share, SIGTERM drains them all, and a server that dies ends the
group rather than leaving it half up. The real command, on the real embedded engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.core.access.auth import hash_token
from civicmeter.core.config import ClickHouseSettings
from civicmeter.core.store.storage_process import StorageProcess
from tests.query.live_server import free_port
from tests.query.test_decision_service import GATEWAY, POLICY, auth, request

REPO = Path(__file__).resolve().parents[2]
CONNECTIONS = 20  # all on one of two servers by chance: 2 in 2**20


@dataclass
class Group:
    process: subprocess.Popen[bytes]
    port: int
    clickhouse: ClickHouseSettings

    def children(self) -> dict[int, str]:
        """The group's processes by pid: their names (core.prctl.name_process)."""
        found: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                name = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                found[int(entry)] = name
        return found

    def servers(self) -> list[int]:
        return sorted(p for p, name in self.children().items() if name.startswith("cm-decision"))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    keys = tmp_path / "api-keys.yaml"
    key = {"id": "gw", "role": "gateway", "organization_id": "seoul", "sha256": hash_token(GATEWAY)}
    keys.write_text(yaml.safe_dump({"keys": [key]}))
    policy = tmp_path / "policies.yaml"
    policy.write_text(yaml.safe_dump(POLICY, allow_unicode=True))
    port = free_port()
    clickhouse = ClickHouseSettings(path=str(tmp_path / "chdb"), database="decisions")
    env = {**os.environ, "CLICKHOUSE_PATH": clickhouse.path, "CLICKHOUSE_DATABASE": "decisions",
           "CIVICMETER_DECISION_GRPC_PORT": str(port), "CIVICMETER_API_KEYS_FILE": str(keys),
           "CIVICMETER_POLICY_FILE": str(policy), "CIVICMETER_DECISION_PROCESSES": "2",
           "CIVICMETER_LOG_LEVEL": "WARNING"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "civicmeter", "decision"], env=env, cwd=REPO)
    started = Group(process, port, clickhouse)
    try:
        _wait_serving(started)
        yield started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def _wait_serving(group: Group) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert group.process.poll() is None, "the decision service ended while starting"
        if len(group.servers()) == 2:
            # A health check on fresh connections until both servers have answered one.
            answered = 0
            for _ in range(10):
                with _channel(group.port) as channel:
                    try:
                        health_pb2_grpc.HealthStub(channel).Check(
                            health_pb2.HealthCheckRequest(), timeout=2
                        )
                        answered += 1
                    except grpc.RpcError:
                        break
            if answered == 10:
                return
        time.sleep(0.3)
    raise AssertionError("the decision service did not start")


def _channel(port: int) -> grpc.Channel:
    # A connection of its own (channels to one address share one by default).
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _connections(pids: list[int], port: int) -> dict[int, int]:
    """Established connections to `port` held by each process (sockets matched by inode)."""
    accepted: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    accepted.add(f"socket:[{fields[9]}]")
    held: dict[int, int] = {}
    for pid in pids:
        targets = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
        held[pid] = sum(target in accepted for target in targets)
    return held


def test_connections_spread_over_the_servers_and_every_call_is_audited(group: Group) -> None:
    servers = group.servers()
    channels = [_channel(group.port) for _ in range(CONNECTIONS)]
    try:
        outcomes = [
            decision_grpc.DecisionServiceStub(channel)
            .Decide(request(user_id=f"u_{n}"), metadata=auth(GATEWAY), timeout=10)
            .outcome
            for n, channel in enumerate(channels * 3)
        ]
        held = _connections(servers, group.port)
    finally:
        for channel in channels:
            channel.close()
    assert outcomes == [pb.OUTCOME_ALLOW] * 3 * CONNECTIONS
    assert sum(held.values()) == CONNECTIONS
    assert all(count > 0 for count in held.values()), held  # each server took some

    group.process.send_signal(signal.SIGTERM)
    assert group.process.wait(60) == 0
    assert not group.children()  # the servers and the storage process ended with it
    # Read by a process of its own: this one's embedded engine belongs to other tests' path.
    reader = StorageProcess(group.clickhouse)
    try:
        calls = reader.call(_decide_calls)
    finally:
        reader.close()
    assert calls == [(3 * CONNECTIONS, CONNECTIONS, 3 * CONNECTIONS)]


def _decide_calls(client: Client) -> list[tuple[int, int, int]]:
    return [
        (int(a), int(b), int(c))
        for a, b, c in client.query(
            "SELECT count(), uniqExact(peer), countIf(status = 'OK') FROM audit_log "
            "WHERE method LIKE '%/Decide'"
        ).result_rows
    ]


@pytest.mark.parametrize("victim", ["cm-decision-0", "cm-storage"])
def test_a_server_or_the_storage_process_dying_ends_the_group(group: Group, victim: str) -> None:
    children = group.children()
    os.kill(next(pid for pid, name in children.items() if name == victim), signal.SIGKILL)
    assert group.process.wait(60) != 0  # for the orchestrator to start the whole again
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children), children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_several_processes_only_for_the_service_alone(tmp_path: Path) -> None:
    env = {**os.environ, "CLICKHOUSE_PATH": str(tmp_path / "chdb"),
           "CIVICMETER_DECISION_PROCESSES": "2"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "civicmeter", "serve", "query", "decision"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "CIVICMETER_DECISION_PROCESSES" in done.stderr and "alone" in done.stderr
