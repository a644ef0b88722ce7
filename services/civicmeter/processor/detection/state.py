"""Detector state as the records of a compacted state topic: one record per key.

A key is `kind|organisation|id` ('|' is in no identifier): `u|org|user` holds everything
kept of one user (its position in usage.raw, day totals and baseline, burst window, denials),
`d|org|department` a department's peer limit and the services it has used. The value is
msgpack of plain values; the latest record of a key is the key's whole state, so a reader that
replays the topic from the start, or its compacted remainder, ends with the latest state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

USER, DEPARTMENT = "u", "d"
_SEPARATOR = "|"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class StateRecord:
    kind: str  # USER or DEPARTMENT
    organization_id: str
    id: str  # user or department id
    values: dict[str, Any]
    # The usage.raw partition the state belongs to, where the engine knows it (a user's);
    # None: the caller places it (with its organisation's records).
    partition: int | None = None

    @property
    def key(self) -> bytes:
        return _SEPARATOR.join((self.kind, self.organization_id, self.id)).encode()

    @property
    def value(self) -> bytes:
        return _encoder.encode(self.values)


def parse(key: bytes, value: bytes) -> StateRecord:
    """The record a state topic's key and value hold."""
    kind, organization_id, ident = key.decode().split(_SEPARATOR, 2)
    if kind not in (USER, DEPARTMENT):
        raise ValueError(f"unknown state kind {kind!r}")
    return StateRecord(kind, organization_id, ident, _decoder.decode(value))
