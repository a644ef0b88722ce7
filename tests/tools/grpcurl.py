"""Where the pinned API tools are: the bin directory scripts/api_tools.sh installs into.

Tests use these instead of PATH, so they run the pinned buf and grpcurl. A missing tool fails
the test (never a skip): run `scripts/api_tools.sh` (make api-tools) first.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
API_TOOLS = REPO / "scripts" / "api_tools.sh"


def tools_bin_dir() -> Path:
    """The directory scripts/api_tools.sh links buf and grpcurl into (it installs nothing)."""
    result = subprocess.run(
        ["bash", str(API_TOOLS), "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Path(result.stdout.strip())


def tool_path(name: str) -> Path:
    """The pinned tool `name` in tools_bin_dir(); fails the calling test when it is missing."""
    path = tools_bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} is not in {path.parent}: run scripts/api_tools.sh (make api-tools), "
            "which installs the pinned buf and grpcurl",
            pytrace=False,
        )
    return path


def grpcurl_path() -> Path:
    """The pinned grpcurl (go install github.com/fullstorydev/grpcurl/cmd/grpcurl)."""
    return tool_path("grpcurl")


def buf_path() -> Path:
    """The pinned buf (npm @bufbuild/buf, its native binary)."""
    return tool_path("buf")
