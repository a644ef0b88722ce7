"""Importing the client loads none of the server's code or heavy dependencies: a finance system
that imports civicmeter.client pays for gRPC and protobuf, not for the policy engine (holidays,
PyYAML), storage (chDB, clickhouse-connect), the stream (faust, aiokafka) or Parquet (pyarrow,
loaded only when a Parquet export is asked for).

Each check runs in a fresh interpreter: this test process has long imported all of them.
"""

import json
import subprocess
import sys

import pytest

SERVER_DEPENDENCIES = {
    "holidays",
    "yaml",
    "chdb",
    "faust",
    "clickhouse_connect",
    "aiokafka",
    "pyarrow",
}


def loaded_after(statements: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statements`."""
    script = f"import json, sys\n{statements}\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


@pytest.mark.parametrize(
    "statements",
    [
        "import civicmeter.client",
        "from civicmeter.client import CivicmeterClient",
        "import civicmeter.client.focus_export, civicmeter.client.report",
    ],
)
def test_the_client_loads_no_server_dependency(statements: str) -> None:
    modules = loaded_after(statements)
    assert "civicmeter.client" in modules
    assert top_level(modules) & SERVER_DEPENDENCIES == set()
    # Nor any of the server's own packages, nor the gateway SDK's policy engine.
    ours = {name for name in modules if name.startswith("civicmeter.")}
    assert {name.split(".")[1] for name in ours} <= {"api", "client"}, sorted(ours)


def test_the_check_sees_what_server_code_loads() -> None:
    # The same look catches them where they are used: the policy engine reads YAML and the
    # holiday calendars, and a Parquet export loads pyarrow.
    assert {"holidays", "yaml"} <= top_level(loaded_after("import civicmeter.policy.organization"))
    export = (
        "import io\n"
        "from civicmeter.client import focus_export\n"
        "focus_export._write_parquet([], io.BytesIO())"
    )
    assert "pyarrow" in top_level(loaded_after(export))
