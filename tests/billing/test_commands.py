"""The billing commands refuse a month range that holds no month before touching storage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", ["rerate", "reconcile"])
@pytest.mark.parametrize(("start", "end"), [("2025-01", "2025-01"), ("2025-03", "2025-01")])
def test_an_empty_month_range_is_refused_naming_the_arguments(
    command: str, start: str, end: str, tmp_path: Path
) -> None:
    env = {"CLICKHOUSE_INTERFACE": "chdb", "CLICKHOUSE_PATH": str(tmp_path / "chdb"),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "civicmeter", command, "--from", start, "--to", end],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"--to ({end}) must be a later month than --from ({start})" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "chdb").exists()  # refused before storage was opened
