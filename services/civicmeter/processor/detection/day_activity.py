"""Users' day totals as the per-user agent hands them to the organisation-wide one, and their
records on the `<group>-<raw>-activity` topic.

A DayActivity says what the proto's UserDayActivity says (usage/v1/activity.proto: absolute
totals of one user's local day, through a usage.raw position), as a msgspec struct: the
benchmark load has about one update per four events, and building, encoding, decoding and
reading a protobuf message per update cost more processor CPU than the organisation-wide
detectors themselves. A record is one msgpack array, `[version, [update, ...]]`, every
struct an array of its fields in order. Records of the protobuf form
(UserDayActivityBatch, written before this format) are still read: the topic keeps a day.
"""

from __future__ import annotations

from datetime import date

import msgspec

from civicmeter.api.usage.v1 import activity_pb2

# The record format written; a reader refuses a newer one rather than misread it.
VERSION = 1


class ServiceUse(msgspec.Struct, array_like=True, gc=False):
    """A sanctioned service a user used, and the first such request in an update's span."""

    service_id: str
    provider_name: str
    first_event_time: float  # epoch seconds
    first_event_id: str


class DayActivity(msgspec.Struct, array_like=True, gc=False):
    """A user's requests and spend on one local day so far, counted through a usage.raw
    position (applying it twice, or after a newer one, changes nothing)."""

    organization_id: str
    department_id: str
    user_id: str
    day: int  # the local date in the organisation's time zone, as date.toordinal()
    requests: int
    cost_krw: str  # exact decimal
    last_event_id: str  # the latest event counted: an alert this update raises names it
    last_event_time: float  # epoch seconds
    source_partition: int
    source_offset: int
    # The services used in the events counted since the previous update (on a day's last
    # update of a take).
    services: list[ServiceUse] = []


_encoder = msgspec.msgpack.Encoder()
_envelope = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
_updates = msgspec.msgpack.Decoder(list[DayActivity])
# msgpack arrays start 0x90-0x9f (up to 15 items), 0xdc or 0xdd; a protobuf
# UserDayActivityBatch starts with field 1's tag, 0x0a (or is empty).
_PROTOBUF_TAG = 0x0A


def encode(updates: list[DayActivity]) -> bytes:
    """One activity record of `updates` (one organisation's, by the topic's key)."""
    return _encoder.encode((VERSION, updates))


def decode(value: bytes) -> list[DayActivity]:
    """The updates of an activity record, of either format."""
    if not value or value[0] == _PROTOBUF_TAG:
        batch = activity_pb2.UserDayActivityBatch.FromString(value)
        return [_from_proto(update) for update in batch.updates]
    version, updates = _envelope.decode(value)
    if version != VERSION:
        raise ValueError(f"activity record of format {version}; this processor reads {VERSION}")
    return _updates.decode(updates)


def _from_proto(update: activity_pb2.UserDayActivity) -> DayActivity:
    last = update.last_event_time
    return DayActivity(
        update.organization_id,
        update.department_id,
        update.user_id,
        date(update.day.year, update.day.month, update.day.day).toordinal(),
        update.requests,
        update.cost_krw,
        update.last_event_id,
        last.seconds + last.nanos / 1e9,
        update.source_partition,
        update.source_offset,
        [
            ServiceUse(
                use.service_id,
                use.provider_name,
                use.first_event_time.seconds + use.first_event_time.nanos / 1e9,
                use.first_event_id,
            )
            for use in update.services
        ],
    )
