"""The API tools: buf lint and buf breaking guard the v1 gRPC API; grpcurl is installed.

buf and grpcurl are the pinned ones scripts/api_tools.sh installs; without them these tests
fail (run `scripts/api_tools.sh` first). They never skip. Breaking changes are made in a copy
of the buf workspace (buf.yaml, proto/ and the googleapis module) in a temporary directory and
checked against the committed baseline proto/baseline/civicmeter-v1.binpb.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tools.grpcurl import REPO, buf_path, grpcurl_path, tools_bin_dir

BUF_CHECK = REPO / "scripts" / "buf_check.sh"
BASELINE = REPO / "proto" / "baseline" / "civicmeter-v1.binpb"
USAGE_EVENT = Path("proto/civicmeter/usage/v1/usage_event.proto")
GOOGLEAPIS = Path(".civicmeter/buf/googleapis")
# buf exits 100 when it reports lint findings or breaking changes (1: it could not run at all).
BUF_FINDINGS = 100
TIMEOUT_SECONDS = 120


def _buf(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BUF_CACHE_DIR=str(tools_bin_dir().parent / "buf" / "cache"))
    return subprocess.run(
        [str(buf_path()), *args],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )


def _breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return _buf(workspace, "breaking", "proto", "--against", str(BASELINE))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def googleapis() -> Path:
    """The googleapis module scripts/buf_check.sh --prepare sets up in the repository."""
    subprocess.run(["bash", str(BUF_CHECK), "--prepare"], check=True, timeout=TIMEOUT_SECONDS)
    prepared = REPO / GOOGLEAPIS
    assert (prepared / "google" / "type" / "money.proto").is_file()
    return prepared


@pytest.fixture
def workspace(tmp_path: Path, googleapis: Path) -> Path:
    """A copy of the buf workspace, unchanged: it passes lint and breaking like the real tree."""
    shutil.copy2(REPO / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    shutil.copytree(googleapis, tmp_path / GOOGLEAPIS)
    return tmp_path


def test_real_tree_passes_lint_and_breaking() -> None:
    buf_path()
    result = subprocess.run(
        ["bash", str(BUF_CHECK)], capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "proto OK" in result.stderr


def test_unchanged_copy_passes(workspace: Path) -> None:
    lint = _buf(workspace, "lint", "proto")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    breaking = _breaking(workspace)
    assert breaking.returncode == 0, breaking.stdout + breaking.stderr


def _delete_field(proto: Path) -> None:
    _edit(proto, "  string purpose = 14;\n", "")


def _renumber_field(proto: Path) -> None:
    _edit(proto, "string purpose = 14;", "string purpose = 99;")


def _rename_field(proto: Path) -> None:
    _edit(proto, "string purpose = 14;", "string intended_use = 14;")


def _retype_field(proto: Path) -> None:
    _edit(proto, "string gateway_id = 3;", "bytes gateway_id = 3;")


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (_delete_field, 'Previously present field "14" with name "purpose"'),
        (_renumber_field, 'Previously present field "14" with name "purpose"'),
        (_rename_field, 'changed name from "purpose" to "intended_use"'),
        (_retype_field, 'changed type from "string" to "bytes"'),
    ],
    ids=["delete", "renumber", "rename", "retype"],
)
def test_breaking_change_to_v1_fails(
    workspace: Path, change: Callable[[Path], None], finding: str
) -> None:
    change(workspace / USAGE_EVENT)
    result = _breaking(workspace)
    assert result.returncode == BUF_FINDINGS, result.stdout + result.stderr
    assert finding in result.stdout
    assert str(USAGE_EVENT) in result.stdout


def test_added_field_is_not_breaking(workspace: Path) -> None:
    _edit(
        workspace / USAGE_EVENT,
        "  google.type.Money reported_cost = 15;\n",
        "  google.type.Money reported_cost = 15;\n  // Added in a later release.\n"
        "  string locale = 98;\n",
    )
    result = _breaking(workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_uses_standard_rules(workspace: Path) -> None:
    _edit(workspace / USAGE_EVENT, "string purpose = 14;", "string Purpose = 14;")
    result = _buf(workspace, "lint", "proto")
    assert result.returncode == BUF_FINDINGS, result.stdout + result.stderr
    assert 'Field name "Purpose" should be lower_snake_case' in result.stdout


def test_grpcurl_runs() -> None:
    result = subprocess.run(
        [str(grpcurl_path()), "-version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).startswith("grpcurl v")
