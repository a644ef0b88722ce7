"""The light distributions (sdk/) install into an empty virtualenv and import without the server.

A finance system installs civicmeter-client and a gateway civicmeter-gateway; neither may pull
chdb, faust, Kafka or ClickHouse clients, nor find any server package once installed. Each is
built as a wheel from this repository and installed with what it declares, nothing else.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_PACKAGES = [
    "civicmeter.core",
    "civicmeter.ingest",
    "civicmeter.processor",
    "civicmeter.sink",
    "civicmeter.query",
    "civicmeter.billing",
    "civicmeter.notifier",
]
HEAVY = ["chdb", "clickhouse_connect", "faust", "aiokafka", "opentelemetry", "litellm"]

# What each distribution's import must give, and what it must not bring along.
CASES: dict[str, dict[str, Any]] = {
    "civicmeter-client": {
        "imports": ["civicmeter.client", "civicmeter.client.report", "civicmeter.api.money"],
        "public": "civicmeter.client",
        "absent": [*SERVER_PACKAGES, "civicmeter.gateway", "civicmeter.policy", "pyarrow"],
        "not_loaded": ["holidays", "yaml", "pyarrow"],
    },
    "civicmeter-gateway": {
        "imports": ["civicmeter.gateway", "civicmeter.policy.decision"],
        "public": "civicmeter.gateway",
        "absent": [*SERVER_PACKAGES, "civicmeter.client"],
        "not_loaded": [],
    },
}

_PROBE = """
import importlib, importlib.util, json, sys
case = json.loads(sys.argv[1])
for name in case["imports"]:
    importlib.import_module(name)
public = importlib.import_module(case["public"])
missing = [n for n in public.__all__ if getattr(public, n, None) is None]
found = [n for n in case["absent"] + case["heavy"] if importlib.util.find_spec(n) is not None]
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(case["not_loaded"]))
print(json.dumps({"public": sorted(public.__all__), "missing": missing, "found": found,
                  "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    # Built from copies: a build writes build/ and *.egg-info beside the sources.
    sources = tmp_path_factory.mktemp("sdk")
    for name in ("api", "client", "gateway"):
        shutil.copytree(
            REPO / "sdk" / name,
            sources / name,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), *(str(sources / d) for d in ("api", "client", "gateway"))],
        check=True, cwd=sources,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("distribution", sorted(CASES))
def test_a_light_distribution_installs_alone_and_imports_without_the_server(
    distribution: str, wheelhouse: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--find-links", str(wheelhouse), distribution],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(installed)}
    assert "civicmeter" not in names
    assert not names & {"chdb", "clickhouse-connect", "faust-streaming", "aiokafka", "pyarrow"}

    case = {**CASES[distribution], "heavy": HEAVY}
    probe = subprocess.run(
        [str(python), "-I", "-c", _PROBE, json.dumps(case)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    found = json.loads(probe.stdout)
    # The same public names as in this repository's own environment.
    public = importlib.import_module(CASES[distribution]["public"])
    assert found["public"] == sorted(public.__all__)
    assert found["missing"] == []
    assert found["found"] == [], f"{distribution} brings along {found['found']}"
    assert found["loaded"] == [], f"importing {distribution} loads {found['loaded']}"
