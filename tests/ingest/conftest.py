"""One ingest service per test module, with the test gateway keys (test_auth.KEYS); a module
that defines its own `ingest` fixture uses that instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.ingest.test_auth import KEYS, Ingest, running_ingest


@pytest.fixture(scope="module")
async def ingest(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ingest]:
    keys = Path(tmp_path_factory.mktemp("keys")) / "gateway-keys.yaml"
    keys.write_text(yaml.safe_dump(KEYS))
    async with running_ingest(kafka_bootstrap, keys) as running:
        yield running
