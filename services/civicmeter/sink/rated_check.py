"""What a usage.rated record must hold for ClickHouse to store its events as they are.

ClickHouse parses a block's records itself and checks the same conditions as it stages them
(sink/event_writer.py): one event it cannot hold fails the whole block. This module then finds
the records at fault, so that they are dead-lettered with the reason and the rest is written.
Each record is checked column by column (the fields every event needs read with C-level
iteration, the costs matched as one string); only a record that fails is walked event by
event, to name its first problem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import attrgetter

from google.protobuf.message import DecodeError

from civicmeter.api.usage.v1 import usage_event_pb2 as pb

# What usage_events' Decimal(18, 6) and DateTime64(3) columns hold.
_COST = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
EPOCH_SECONDS = (0, 10_413_792_000)  # 1970 to 2300
# Every cost of a record, each followed by a separator no valid cost contains: the match holds
# exactly as many costs as there are separators, so a cost hiding a separator is caught by the
# count (rated_events_of).
_SEPARATOR = "\x00"
_COSTS = re.compile(rf"(?:[0-9]{{1,12}}(?:\.[0-9]{{1,6}})?{_SEPARATOR})*")
_event = attrgetter("event")
_event_id = attrgetter("event_id")
_organization_id = attrgetter("organization_id")
_price_version = attrgetter("price_version")
_cost = attrgetter("cost_krw")
_seconds = attrgetter("event_time.seconds")


def refusals(records: Sequence[bytes]) -> dict[int, str]:
    """The records ClickHouse cannot store, by index: why (undecodable, or the first event
    holding a value the ledger cannot hold)."""
    refused: dict[int, str] = {}
    for index, value in enumerate(records):
        try:
            rated_events_of(value)
        except DecodeError as problem:
            refused[index] = str(problem)
    return refused


def rated_events_of(value: bytes) -> int:
    """The number of events of a usage.rated record that ClickHouse can store as they are;
    DecodeError naming the first problem otherwise (the record is then dead-lettered whole)."""
    rated = pb.RatedUsageEventBatch.FromString(value).events
    if not rated:
        return 0
    events = list(map(_event, rated))
    costs = _SEPARATOR.join(map(_cost, rated)) + _SEPARATOR
    seconds = list(map(_seconds, events))
    if (
        all(map(_event_id, events))
        and all(map(_organization_id, events))
        and all(map(_price_version, rated))
        and costs.count(_SEPARATOR) == len(rated)
        and _COSTS.fullmatch(costs)
        and EPOCH_SECONDS[0] <= min(seconds)
        and max(seconds) < EPOCH_SECONDS[1]
    ):
        return len(rated)
    _name_the_problem(rated)
    raise DecodeError("an event holds a value ClickHouse cannot store")  # not reached


def _name_the_problem(rated: Sequence[pb.RatedUsageEvent]) -> None:
    for index, message in enumerate(rated):
        event = message.event
        if not event.event_id or not event.organization_id or not message.price_version:
            raise DecodeError(f"events[{index}] has no event_id, organization_id or price_version")
        if not _COST.fullmatch(message.cost_krw):
            raise DecodeError(f"events[{index}].cost_krw is not a decimal of at most 6 places")
        if not EPOCH_SECONDS[0] <= event.event_time.seconds < EPOCH_SECONDS[1]:
            raise DecodeError(f"events[{index}].event_time is out of range")
