"""The metered quantities: the fields of the Usage message, which are also the column names of
usage_events and of the rollups, and the units prices are quoted in."""

from __future__ import annotations

from civicmeter.api.usage.v1 import usage_event_pb2 as pb

QUANTITIES: tuple[str, ...] = tuple(f.name for f in pb.Usage.DESCRIPTOR.fields)
