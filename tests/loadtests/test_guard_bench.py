"""The guard benchmark's machinery, on a small scale: its prompts, and open-loop runs of its
client process against a floor server and the real decision service, with the CPU read on
both sides; the decision service's storage process at idle priority."""

from __future__ import annotations

import os
import time
from pathlib import Path

from loadtests.guard.bench import (
    PROMPT_BYTES,
    RRN,
    child_pids,
    percentile,
    prompts,
    remote,
    start_decision_server,
    start_floor_server,
)


def test_prompts_are_about_4_kb_and_every_third_holds_a_registration_number() -> None:
    texts = prompts(9)
    assert len(texts) == 9
    for n, text in enumerate(texts):
        assert PROMPT_BYTES - 200 <= len(text.encode()) <= PROMPT_BYTES
        assert (f"{RRN[:6]}-{RRN[6:]}" in text) == (n % 3 == 0)


def test_percentile_is_a_value_of_the_sample() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([3.0], 0.99) == 3.0


def test_an_open_loop_run_times_every_call_and_reads_both_sides_cpu() -> None:
    server, target = start_floor_server("aio")
    try:
        run = remote(target, server.pid, "floor", rate=200, seconds=1.0, connections=2)
    finally:
        server.terminate()
        server.wait(30)
    assert run.errors == {}
    assert len(run.times) == 200
    assert all(t > 0 for t in run.times)
    assert 100 <= run.achieved <= 260  # calls started on a 200/s schedule
    assert run.server_ms_per_call > 0 and run.client_ms_per_call > 0


def test_the_decision_service_alone_does_its_storage_work_in_a_child_process(
    tmp_path: Path,
) -> None:
    server, target = start_decision_server(tmp_path)
    try:
        run = remote(target, server.pid, "decision", rate=200, seconds=2.5, connections=1)
        children = child_pids(server.pid)
        storage = [child for child in children if _storage_process(child)]
        policies = [os.sched_getscheduler(child) for child in storage]
    finally:
        server.terminate()
        code = server.wait(60)
    assert run.errors == {}
    assert len(run.times) == 500
    # The audit batches of the run were written by the child, not by the serving process.
    assert children and run.storage_ms_per_call > 0
    # The child runs at idle priority, so its bursts never keep the calls from a core.
    assert policies == [os.SCHED_IDLE]
    assert code == 0
    # Its children end with it (the storage process when its pipe closes; multiprocessing's
    # resource tracker once no process holds its pipe), within moments.
    deadline = time.monotonic() + 15
    while any(_running(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(child) for child in children)


def _storage_process(pid: int) -> bool:
    return Path(f"/proc/{pid}/comm").read_text().strip() == "cm-storage"


def test_a_group_of_decision_processes_is_measured_per_process(tmp_path: Path) -> None:
    server, target = start_decision_server(tmp_path, processes=2)
    try:
        run = remote(target, server.pid, "decision", rate=200, seconds=2.5, connections=16)
    finally:
        server.terminate()
        code = server.wait(60)
    assert run.errors == {} and len(run.times) == 500
    assert len(run.split) == 2 and all(share > 0 for share in run.split)
    assert abs(sum(run.split) - run.server_ms_per_call) < 1e-6
    assert run.storage_ms_per_call > 0  # the storage process both servers share
    assert code == 0


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
