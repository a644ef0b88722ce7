import logging
from pathlib import Path

import pytest

from civicmeter.core.policy_source import PolicySource
from civicmeter.policy.organization import PolicyError


def test_a_changed_file_is_reloaded_and_a_bad_one_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text('version: "1"\n')
    source = PolicySource(path)
    assert source.current().version == "1"
    path.write_text('version: "2"\n')
    assert source.current().version == "2"
    path.write_text('version: "3"\ndefaults: {budgets: {monthly_krw: 0}}\n')
    with caplog.at_level(logging.ERROR, logger="civicmeter.policy"):
        assert [source.current().version for _ in range(3)] == ["2", "2", "2"]
    [record] = caplog.records  # once, not every round
    assert f"{path}:2: defaults.budgets.monthly_krw: must be a positive amount" in record.message
    assert source.last_error is not None
    path.unlink()
    assert source.current().version == "2"  # a file gone missing keeps the last good too
    path.write_text('version: "4"\n')
    assert source.current().version == "4"
    assert source.last_error is None


def test_a_bad_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        PolicySource(tmp_path / "missing.yaml")
