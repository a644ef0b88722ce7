"""A request's events validated as a batch, read from their encodings where they can be.

The rules are validate_event_at's (core/events/validation.py). Most of what makes an event
valid is its identity (gateway, organisation, department, user, account kind, provider,
service, model, operation, purpose, decision) and its usage quantities, and both repeat from
event to event. The protobuf runtime cuts them out of the batch's encoding as bytes
(projections of UsageEvent that declare only those fields, core/events/projections.py), so
each distinct identity and usage is proven valid once (an identity by one event that passes
every rule, a usage by the quantities' rules) and remembered: reading eleven fields of every
event in Python would cost more than all the rest. Event ids and times, which differ per
event, are checked as columns, and the fields most events leave out where present. Only an
event some rule may refuse goes through validate_event_at, so that its
error is exactly the one-by-one error.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.rare_fields import events_with_rare_fields
from civicmeter.core.events.validation import (  # the same rules, some of them on their own
    ID_LINES,
    ID_PATTERN,
    IdentityFields,
    TimeWindow,
    UsageField,
    ValidationError,
    identity_encodings,
    usage_encodings,
    validate_event_at,
    validate_usage,
)
from civicmeter.core.kafka import event_key

_MAX_NANOS = 999_999_999
# How many distinct identities and usages are remembered (then forgotten all at once): users
# by services is bounded, while API calls' usages rarely recur, so only a few are worth keeping.
_IDENTITIES_LIMIT, _USAGES_LIMIT = 200_000, 20_000
# Identities and usages some event carrying them passed every rule with.
_valid_identities: set[bytes] = set()
_valid_usages: set[bytes] = set()
_event_id_of = attrgetter("event_id")
_time_of = attrgetter("seconds", "nanos")
_event_time_of = attrgetter("event_time")


def identity_key(identity: bytes) -> bytes:
    """The partition key (core/kafka.py event_key) of an event with this identity."""
    fields = IdentityFields.FromString(identity)
    return event_key(fields.organization_id.decode(), fields.user_id.decode())  # type: ignore[attr-defined]


def validate_encoded_batch(
    events: Sequence[pb.UsageEvent],
    encoded: bytes,
    earliest: float,
    latest: float,
    window: TimeWindow,
) -> tuple[list[bytes], dict[int, ValidationError]]:
    """validate_event_at over `events`, whose UsageEventBatch encoding is `encoded`: each
    event's identity (its identity fields as encoded, for identity_key) and the error of each
    invalid event, by index."""
    identities = identity_encodings(encoded)
    usages = usage_encodings(encoded)
    if not events:
        return identities, {}
    errors: dict[int, ValidationError] = {}
    checked: set[int] = set()

    def check(index: int) -> bool:
        """Every rule for one event; a valid one proves its identity and usage valid."""
        checked.add(index)
        try:
            validate_event_at(events[index], earliest, latest, window)
        except ValidationError as exc:
            errors[index] = exc
            return False
        _remember(_valid_identities, identities[index], _IDENTITIES_LIMIT)
        _remember(_valid_usages, usages[index], _USAGES_LIMIT)
        return True

    suspects: set[int] = set()
    for indices in _unproven(identities, _valid_identities).values():
        if not check(indices[0]):  # refused, maybe for another field: check them all
            suspects.update(indices[1:])
    # Quantities differ from call to call (tokens): each new usage is checked on its own.
    for usage, indices in _unproven(usages, _valid_usages).items():
        try:
            validate_usage(pb.Usage.FromString(UsageField.FromString(usage).usage))  # type: ignore[attr-defined]
        except ValidationError:
            suspects.update(indices)
        else:
            _remember(_valid_usages, usage, _USAGES_LIMIT)
    ids = list(map(_event_id_of, events))
    lines = "\n".join(ids) + "\n"
    # One line per id: an id with a line break of its own must not pass as two valid ones.
    if lines.count("\n") != len(ids) or not ID_LINES.fullmatch(lines):
        suspects.update(i for i, value in enumerate(ids) if not ID_PATTERN.fullmatch(value))
    seconds, nanos = zip(*map(_time_of, map(_event_time_of, events)), strict=True)
    # An event without a time reads as second 0, which the window refuses when it starts later.
    if earliest <= 0:
        suspects.update(i for i, event in enumerate(events) if not event.HasField("event_time"))
    if min(seconds) < earliest or max(seconds) > latest:
        suspects.update(i for i, s in enumerate(seconds) if not earliest <= s <= latest)
    if min(nanos) < 0 or max(nanos) > _MAX_NANOS:
        suspects.update(i for i, n in enumerate(nanos) if not 0 <= n <= _MAX_NANOS)
    # Risk signals, rule ids and a reported cost: every rule where any is present.
    suspects.update(events_with_rare_fields(encoded))
    for index in sorted(suspects - checked):
        check(index)
    return identities, errors


def _unproven(column: list[bytes], valid: set[bytes]) -> dict[bytes, list[int]]:
    """The indices of each value of `column` not known valid."""
    unproven: dict[bytes, list[int]] = {}
    if not valid.issuperset(column):
        for index, value in enumerate(column):
            if value not in valid:
                unproven.setdefault(value, []).append(index)
    return unproven


def _remember(valid: set[bytes], value: bytes, limit: int) -> None:
    if len(valid) >= limit:
        valid.clear()
    valid.add(value)
