"""The processor puts a changed policy file in force between batches, and keeps the last good
one when a change is bad."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from civicmeter.core.policy_source import PolicySource
from civicmeter.processor.app import PolicyReloader
from civicmeter.processor.detection import DetectionEngine
from tests.factories import event

POLICY = """version: "{version}"
defaults:
  banned_providers: [{banned}]
  sanctioned_services: [openai-api]
"""


def banned_alerts(engine: DetectionEngine) -> int:
    sent = event(provider_name="openai", service_id="openai-api")
    return sum(a.alert_type == "banned_provider" for a in engine.process([(sent, Decimal(1))]))


async def test_a_changed_policy_is_put_in_force_and_a_bad_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICY.format(version="1", banned="deepseek"))
    source = PolicySource(path)
    engine = DetectionEngine(source.current(), fold_repeats=False)  # as the processor runs it
    reload = PolicyReloader(engine, source)
    assert not await reload()  # unchanged
    assert banned_alerts(engine) == 0

    path.write_text(POLICY.format(version="2", banned="openai"))
    assert await reload()
    assert engine.policies.version == "2"
    assert banned_alerts(engine) == 1

    path.write_text(POLICY.format(version="3", banned="openai") + "  nonsense_key: 1\n")
    assert not await reload()
    assert engine.policies.version == "2"
    assert source.last_error is not None
    assert "nonsense_key" in str(source.last_error)
    assert banned_alerts(engine) == 1
