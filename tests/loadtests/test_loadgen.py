"""The load generator sends its gateway key: ingest with keys accepts its batches."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from civicmeter.api.seoul import SEOUL
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.access.auth import hash_token
from loadtests.loadgen import FACTS, run_load, templates, with_fresh_usage, working_hours_offset_ns
from loadtests.scenario import governments_of, load_facts
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


@pytest.mark.parametrize(
    ("now", "lands_on"),
    [
        ("2026-12-07T12:00:00+09:00", "2026-12-07T12:00:00+09:00"),  # a Monday noon: as it is
        ("2026-12-06T14:00:00+09:00", "2026-12-04T11:00:00+09:00"),  # a Sunday: Friday 11:00
        ("2026-12-07T09:30:00+09:00", "2026-12-04T11:00:00+09:00"),  # before 10:00 on Monday
        ("2026-12-07T19:00:00+09:00", "2026-12-07T11:00:00+09:00"),  # Monday evening
        ("2026-12-25T12:00:00+09:00", "2026-12-24T11:00:00+09:00"),  # Christmas, a holiday
    ],
)
def test_the_load_clock_lands_in_seoul_working_hours(now: str, lands_on: str) -> None:
    instant = datetime.fromisoformat(now).astimezone(UTC)
    moved = instant - timedelta(microseconds=working_hours_offset_ns(instant) / 1000)
    assert moved == datetime.fromisoformat(lands_on)
    assert moved.astimezone(SEOUL).weekday() < 5


def test_fresh_usage_gives_api_calls_their_own_token_counts_and_keeps_seats() -> None:
    pool = templates(governments_of(load_facts(FACTS)), 400, seed=3)
    rng = random.Random(5)
    api = [t for t in pool if pb.UsageEvent.FromString(t).usage.input_tokens]
    seats = [t for t in pool if not pb.UsageEvent.FromString(t).usage.input_tokens]
    assert api and seats
    assert all(with_fresh_usage(t, rng) == t for t in seats)
    fresh = [pb.UsageEvent.FromString(with_fresh_usage(api[0], rng)) for _ in range(50)]
    assert len({(e.usage.input_tokens, e.usage.output_tokens) for e in fresh}) > 40
    original = pb.UsageEvent.FromString(api[0])
    for event in fresh:  # only the counts change
        event.usage.input_tokens = original.usage.input_tokens
        event.usage.output_tokens = original.usage.output_tokens
        assert event == original
