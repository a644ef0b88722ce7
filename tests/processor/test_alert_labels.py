"""The labels alerts quote: the same text strftime writes, in any zone and year."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from civicmeter.processor.detection.alert import day_label, minute_label

ZONES = [UTC, ZoneInfo("Asia/Seoul"), ZoneInfo("America/St_Johns"), ZoneInfo("Europe/Berlin")]


@given(when=st.datetimes(timezones=st.sampled_from(ZONES)))
def test_minute_and_day_labels_are_strftimes(when: datetime) -> None:
    assert day_label(when) == f"{when:%Y-%m-%d}"
    assert minute_label(when) == f"{when:%Y-%m-%d %H:%M} {when.tzname() or ''}".rstrip()
