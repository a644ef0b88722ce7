"""loadtests.detection_cpu times the engine alone on both paths and both configurations."""

import re
from pathlib import Path

import pytest

from civicmeter.processor.detection import engine as engine_module
from loadtests import detection_cpu


@pytest.mark.parametrize("flags", [[], ["--reference"], ["--user"], ["--user", "--reference"]])
def test_it_prints_cpu_per_event(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    assert detection_cpu.main(["--events", "1200", "--repeat", "1", *flags]) == 0
    line = capsys.readouterr().out.strip()
    path = "reference" if "--reference" in flags else "ordinary path"
    found = re.fullmatch(rf"1200 events, detection alone \({path}\): ([0-9.]+) µs CPU/event", line)
    assert found is not None, line
    assert float(found.group(1)) > 0


def test_a_baseline_engine_is_timed_in_turn(capsys: pytest.CaptureFixture[str]) -> None:
    baseline = Path(engine_module.__file__ or "")
    flags = ["--events", "600", "--repeat", "1", "--baseline", str(baseline)]
    assert detection_cpu.main(flags) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [re.sub(r"[0-9.]+ µs", "N µs", line) for line in lines] == [
        "600 events, detection alone (ordinary path): N µs CPU/event",
        f"600 events, detection alone (baseline {baseline}): N µs CPU/event",
    ]
