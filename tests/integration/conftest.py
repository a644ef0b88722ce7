"""The whole pipeline, each service in its own process, on the real broker and chDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.stack import LocalStack


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    # Spans go to the console exporter, i.e. the service logs, where a test can read them.
    env = {"OTEL_TRACES_EXPORTER": "console", "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": "200"}
    with LocalStack(kafka_bootstrap, workdir, extra_env=env) as running:
        yield running


def read_log(stack: LocalStack, name: str) -> str:
    return (Path(stack.workdir) / "logs" / f"{name}.log").read_text(errors="replace")
