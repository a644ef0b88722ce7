"""loadtests.detection_cpu times the engine alone on both paths and both configurations."""

import re

import pytest

from loadtests import detection_cpu


@pytest.mark.parametrize("flags", [[], ["--reference"], ["--user"], ["--user", "--reference"]])
def test_it_prints_cpu_per_event(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    assert detection_cpu.main(["--events", "1200", "--repeat", "1", *flags]) == 0
    line = capsys.readouterr().out.strip()
    path = "reference" if "--reference" in flags else "ordinary path"
    found = re.fullmatch(rf"1200 events, detection alone \({path}\): ([0-9.]+) µs CPU/event", line)
    assert found is not None, line
    assert float(found.group(1)) > 0
