"""The load generator sends its gateway key: ingest with keys accepts its batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from civicmeter.core.auth import hash_token
from loadtests.loadgen import run_load
from tests.ingest.test_auth import MULTI_TOKEN, running_ingest

pytestmark = [pytest.mark.kafka]


async def test_load_is_sent_with_the_gateway_key_and_refused_without(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    keys = tmp_path / "gateway-keys.yaml"
    all_organisations = {"id": "relay", "role": "gateway", "organization_id": "*",
                         "sha256": hash_token(MULTI_TOKEN)}  # fmt: skip
    keys.write_text(yaml.safe_dump({"keys": [all_organisations]}))
    async with running_ingest(kafka_bootstrap, keys) as ingest:
        base = ingest.url.removesuffix("/v1/events")
        sent = await asyncio.to_thread(run_load, base, 200, 2.0, 1, 50, False, token=MULTI_TOKEN)
        assert sent >= 200  # two seconds at 200 events/s, in batches of 50
        with pytest.raises(RuntimeError, match="1 load worker"):
            await asyncio.to_thread(run_load, base, 200, 1.0, 1, 50, False)
