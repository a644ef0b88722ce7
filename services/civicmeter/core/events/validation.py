"""Rules every usage event must satisfy, with errors that name the offending field.

The same rules run at ingest (synchronous callers get HTTP 400 / INVALID_ARGUMENT) and in the
processor (anything on usage.raw that breaks them goes to the dead-letter topic).

User ids must be pseudonymous: "u_" and 32 lowercase hex digits, the form of the gateway SDK's
`pseudonymise_user` (a keyed HMAC-SHA256). The form is fixed, not configured: what an
organisation chooses is its key (and, if it pseudonymises without the SDK, its keyed hash, as
long as it renders the result in this form); a name, an e-mail address or an employee number
never has this form, so none reaches Kafka, ClickHouse, alert keys or partition keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter, itemgetter, methodcaller
from typing import cast

from civicmeter.api.limits import MAX_PII_KINDS, MAX_RULE_IDS
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.projections import cut, projection
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.rare_fields import events_with_rare_fields

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DECISIONS = frozenset(pb.Decision.values())
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_CURRENCY = re.compile(r"[A-Z]{3}")
PSEUDONYMOUS_USER_ID = re.compile(r"u_[0-9a-f]{32}")
# Not the value itself: a refused user id may be a person's name or e-mail address.
_USER_ID_FORM = (
    "must be pseudonymised: 'u_' and 32 lowercase hex digits of a keyed HMAC "
    "(the gateway SDK's pseudonymise_user)"
)
# The range of a google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_MAX_NANOS = 999_999_999

# gen_ai.operation.name values plus the media operations AI services bill for.
OPERATIONS = frozenset(
    {
        "chat",
        "text_completion",
        "generate_content",
        "embeddings",
        "invoke_agent",
        "execute_tool",
        "image_generation",
        "speech_synthesis",
        "transcription",
        "video_generation",
        "music_generation",
        "search",
        "presentation",
        "subscription",
    }
)

# Per-event ceilings: far above any real request, low enough to catch unit mistakes.
QUANTITY_LIMITS = {
    "input_tokens": 10_000_000,
    "output_tokens": 10_000_000,
    "cache_read_input_tokens": 10_000_000,
    "cache_creation_input_tokens": 10_000_000,
    "reasoning_tokens": 10_000_000,
    "images": 1_000,
    "audio_milliseconds": 86_400_000,
    "video_milliseconds": 86_400_000,
    "characters": 100_000_000,
    "requests": 100_000,
    "seat_months": 10_000,
}
# The same ceilings in the order of QUANTITIES, as EventColumns.quantities holds them.
LIMITS_IN_ORDER: tuple[int, ...] = tuple(QUANTITY_LIMITS[name] for name in QUANTITIES)
MAX_PII_FINDINGS = 100_000


class ValidationError(ValueError):
    """An event breaks a rule; `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TimeWindow:
    """How far from now an event's time may be."""

    max_age: timedelta = timedelta(days=400)
    max_future: timedelta = timedelta(minutes=5)


_ACCOUNT_KINDS = frozenset(pb.AccountKind.values()) - {pb.ACCOUNT_KIND_UNSPECIFIED}
# Identifiers repeat across events (organisations, departments, users, services), so each
# distinct value is matched against its pattern once; the cache is cleared when it grows large.
_known_good: dict[re.Pattern[str], set[str]] = {
    ID_PATTERN: set(),
    _NAME: set(),
    _MODEL: set(),
    PSEUDONYMOUS_USER_ID: set(),
}
_KNOWN_GOOD_LIMIT = 200_000


def _check_id(
    value: str, field: str, pattern: re.Pattern[str] = ID_PATTERN, expected: str | None = None
) -> None:
    """`expected` replaces the default message, which quotes the start of the value."""
    known = _known_good[pattern]
    if value in known:
        return
    if not value:
        raise ValidationError(field, "is required")
    if not pattern.fullmatch(value):
        raise ValidationError(
            field,
            expected or f"{value[:40]!r} is not a valid identifier (pattern {pattern.pattern})",
        )
    if len(known) >= _KNOWN_GOOD_LIMIT:
        known.clear()
    known.add(value)


def validate_event(event: pb.UsageEvent, now: datetime, window: TimeWindow = TimeWindow()) -> None:
    """Raise ValidationError naming the first offending field; return None when valid."""
    now_s = now.timestamp()
    validate_event_at(
        event,
        now_s - window.max_age.total_seconds(),
        now_s + window.max_future.total_seconds(),
        window,
    )


def validate_event_at(
    event: pb.UsageEvent, earliest: float, latest: float, window: TimeWindow
) -> None:
    """validate_event with the time bounds precomputed (epoch seconds), for hot loops."""
    _check_id(event.event_id, "event_id")
    if not event.HasField("event_time"):
        raise ValidationError("event_time", "is required")
    seconds = event.event_time.seconds
    if not 0 <= event.event_time.nanos <= _MAX_NANOS:
        raise ValidationError("event_time.nanos", f"must be within 0 and {_MAX_NANOS}")
    if not earliest <= seconds <= latest:
        if not _TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1]:
            raise ValidationError(
                "event_time.seconds", "is outside the range of a Timestamp (years 1 to 9999)"
            )
        when = event.event_time.ToJsonString()
        if seconds > latest:
            raise ValidationError(
                "event_time", f"{when} is in the future (more than {window.max_future} ahead)"
            )
        raise ValidationError("event_time", f"{when} is older than {window.max_age.days} days")
    _check_id(event.gateway_id, "gateway_id")
    _check_id(event.organization_id, "organization_id")
    _check_id(event.department_id, "department_id")
    _check_id(event.user_id, "user_id", PSEUDONYMOUS_USER_ID, _USER_ID_FORM)
    if event.account_kind not in _ACCOUNT_KINDS:
        if event.account_kind == pb.ACCOUNT_KIND_UNSPECIFIED:
            raise ValidationError("account_kind", "is required (organizational or personal)")
        raise ValidationError("account_kind", f"unknown value {event.account_kind}")
    _check_id(event.provider_name, "provider_name", _NAME)
    _check_id(event.service_id, "service_id", _NAME)
    if event.request_model:
        _check_id(event.request_model, "request_model", _MODEL)
    if event.operation_name not in OPERATIONS:
        raise ValidationError(
            "operation_name",
            f"{event.operation_name[:40]!r} is not one of {', '.join(sorted(OPERATIONS))}",
        )
    validate_usage(event.usage)
    if event.HasField("risk"):
        _validate_risk(event.risk)
    if event.purpose:
        _check_id(event.purpose, "purpose", _NAME)
    if event.decision not in _DECISIONS:
        raise ValidationError("decision", f"{event.decision} is not a Decision value")
    if len(event.decision_rule_ids) > MAX_RULE_IDS:
        raise ValidationError("decision_rule_ids", f"more than {MAX_RULE_IDS} rule ids")
    for index, rule in enumerate(event.decision_rule_ids):
        _check_id(rule, f"decision_rule_ids[{index}]", _NAME)
    if event.HasField("reported_cost"):
        if not _CURRENCY.fullmatch(event.reported_cost.currency_code):
            raise ValidationError("reported_cost.currency_code", "must be an ISO 4217 code")
        if event.reported_cost.units < 0:
            raise ValidationError("reported_cost.units", "must not be negative")
        if not 0 <= event.reported_cost.nanos <= _MAX_NANOS:
            raise ValidationError("reported_cost.nanos", f"must be within 0 and {_MAX_NANOS}")


def _validate_risk(risk: pb.RiskSignals) -> None:
    if len(risk.pii_findings) > MAX_PII_KINDS:
        raise ValidationError(
            "risk.pii_findings", f"{len(risk.pii_findings)} kinds exceed the limit {MAX_PII_KINDS}"
        )
    for kind, count in risk.pii_findings.items():
        _check_id(kind, f"risk.pii_findings[{kind[:40]!r}]", _NAME)
        if count > MAX_PII_FINDINGS:
            raise ValidationError(
                f"risk.pii_findings[{kind!r}]", f"{count} exceeds {MAX_PII_FINDINGS}"
            )
    if risk.content_category:
        _check_id(risk.content_category, "risk.content_category", _NAME)


def validate_usage(usage: pb.Usage) -> None:
    # ListFields yields only the quantities that are set (non-zero in proto3).
    fields = usage.ListFields()
    if not fields:
        raise ValidationError("usage", "at least one quantity must be positive")
    for descriptor, value in fields:
        if value < 0:
            raise ValidationError(f"usage.{descriptor.name}", f"must not be negative, got {value}")
        limit = QUANTITY_LIMITS[descriptor.name]
        if value > limit:
            raise ValidationError(
                f"usage.{descriptor.name}", f"{value} exceeds the per-event limit {limit}"
            )


# --- whole batches --------------------------------------------------------------------------

# The string and enum fields an event's validity depends on that repeat from event to event:
# who (gateway, organisation, department, user, account kind), what (provider, service,
# model, operation), why and the decision. Index of each in an identity tuple:
IDENTITY_FIELDS = (
    "gateway_id",
    "organization_id",
    "department_id",
    "user_id",
    "account_kind",
    "provider_name",
    "service_id",
    "request_model",
    "operation_name",
    "purpose",
    "decision",
)
Identity = tuple[str, str, str, str, int, str, str, str, str, str, int]
_identity_of = attrgetter(*IDENTITY_FIELDS)
_quantities_of = attrgetter(*QUANTITIES)
_event_id_of = attrgetter("event_id")
_event_time_of = attrgetter("event_time")
_usage_of = attrgetter("usage")
_time_of = attrgetter("seconds", "nanos")
_has_time = methodcaller("HasField", "event_time")
# Many event ids at once: each on its own line, every line a valid identifier.
ID_LINES = re.compile(rf"(?:{ID_PATTERN.pattern}\n)*")
# Each quantity's limit and the getter of its column, the lowest limit first.
_BY_LIMIT = [
    (LIMITS_IN_ORDER[i], itemgetter(i))
    for i in sorted(range(len(QUANTITIES)), key=LIMITS_IN_ORDER.__getitem__)
]
# Identities found valid, each to itself: the one tuple every event with that identity then
# holds, so that the caches keyed by identity downstream (pricing, detection) find it by
# identity rather than comparing eleven strings. Cleared when large (users x services is
# bounded in practice).
_valid_identities: dict[Identity, Identity] = {}
_VALID_IDENTITIES_LIMIT = 200_000
# Each event's identity fields and usage as encoded (core/events/projections.py): reading
# eleven strings and eleven quantities of every event in Python costs more than the rest of
# validation, while equal bytes mean equal fields.
IdentityProjection, IdentityFields = projection("Identities", IDENTITY_FIELDS)
UsageProjection, UsageField = projection("Usages", ["usage"])
# Encoded identities found valid, each to its identity's one tuple; encoded usages found
# valid, each to its quantities. Few usages are worth keeping (API calls' token counts rarely
# recur), so fewer are remembered. Each is forgotten all at once when large.
_identity_by_encoding: dict[bytes, Identity] = {}
_quantities_by_encoding: dict[bytes, tuple[int, ...]] = {}
_USAGES_LIMIT = 20_000


def identity_encodings(batch: bytes) -> list[bytes]:
    """Each event's identity fields as encoded, from a UsageEventBatch encoding."""
    return cut(IdentityProjection, batch)


def usage_encodings(batch: bytes) -> list[bytes]:
    """Each event's usage field as encoded, from a UsageEventBatch encoding."""
    return cut(UsageProjection, batch)


@dataclass(frozen=True)
class EventColumns:
    """The fields of a batch's events its readers need, one list per field, read once."""

    identities: list[Identity]
    seconds: list[int]  # event_time.seconds
    quantities: list[tuple[int, ...]]  # the Usage fields, in QUANTITIES order
    event_ids: list[str]
    nanos: list[int]  # event_time.nanos
    # False where the event has none of the rare fields (risk signals, decision rule ids, a
    # reported cost); True where it may have one.
    rare: list[bool]

    def extend(self, other: EventColumns) -> None:
        """Append every event of `other` (e.g. a record's accepted events to a batch's)."""
        self.identities.extend(other.identities)
        self.seconds.extend(other.seconds)
        self.quantities.extend(other.quantities)
        self.event_ids.extend(other.event_ids)
        self.nanos.extend(other.nanos)
        self.rare.extend(other.rare)

    def keep(self, other: EventColumns, index: int) -> None:
        """Append the event at `index` of `other`."""
        self.identities.append(other.identities[index])
        self.seconds.append(other.seconds[index])
        self.quantities.append(other.quantities[index])
        self.event_ids.append(other.event_ids[index])
        self.nanos.append(other.nanos[index])
        self.rare.append(other.rare[index])


def validate_batch(
    events: Sequence[pb.UsageEvent],
    earliest: float,
    latest: float,
    window: TimeWindow,
    encoded: bytes | None = None,
) -> tuple[EventColumns, dict[int, ValidationError]]:
    """validate_event_at over many events: the error of each invalid event, by index.

    Each rule is checked for the whole batch at once (a column's minimum and maximum, one
    pattern over all event ids, repeated identities looked up among those already found
    valid); only an event some rule may refuse goes through validate_event_at, so that its
    error is exactly the one-by-one error. `encoded`, the events as a UsageEventBatch's
    encoding written by the runtime (each field once, as SerializeToString writes it), when at
    hand, lets each event's identity and usage be recognised by their encodings, read from
    the messages only when new (core/events/projections.py), and the fields most events
    leave out be found for the whole batch at once (core/events/rare_fields.py).
    """
    if not events:
        return EventColumns([], [], [], [], [], []), {}
    suspects: set[int] = set()  # events some rule may refuse
    if encoded is None:
        identities = _read_identities(events, suspects)
        quantities: list[tuple[int, ...]] = list(map(_quantities_of, map(_usage_of, events)))
        if not _quantities_valid(quantities):
            suspects.update(i for i, q in enumerate(quantities) if not _quantities_valid([q]))
    else:
        identities = _encoded_identities(events, identity_encodings(encoded), suspects)
        quantities = _encoded_quantities(events, usage_encodings(encoded), suspects)
    seconds_column, nanos_column = zip(*map(_time_of, map(_event_time_of, events)), strict=True)
    seconds: list[int] = list(seconds_column)
    nanos: list[int] = list(nanos_column)
    ids: list[str] = list(map(_event_id_of, events))
    rare = [False] * len(events)
    columns = EventColumns(identities, seconds, quantities, ids, nanos, rare)
    lines = "\n".join(ids) + "\n"
    # One line per id: an id with a line break of its own must not pass as two valid ones.
    if lines.count("\n") != len(ids) or not ID_LINES.fullmatch(lines):
        suspects.update(i for i, value in enumerate(ids) if not ID_PATTERN.fullmatch(value))
    # An event without a time reads as second 0, which the window refuses when it starts later.
    if earliest <= 0 and not all(map(_has_time, events)):
        suspects.update(i for i, event in enumerate(events) if not event.HasField("event_time"))
    if min(seconds) < earliest or max(seconds) > latest:
        suspects.update(i for i, s in enumerate(seconds) if not earliest <= s <= latest)
    if min(nanos) < 0 or max(nanos) > _MAX_NANOS:
        suspects.update(i for i, n in enumerate(nanos) if not 0 <= n <= _MAX_NANOS)
    # Risk signals, rule ids and a reported cost are rare: checked where present.
    suspects.update(_rare_field_suspects(events, encoded, rare))
    errors: dict[int, ValidationError] = {}
    for i in sorted(suspects):
        try:
            validate_event_at(events[i], earliest, latest, window)
        except ValidationError as exc:
            errors[i] = exc
    return columns, errors


def _read_identities(events: Sequence[pb.UsageEvent], suspects: set[int]) -> list[Identity]:
    """Each event's identity read from its message; those not found valid are suspects."""
    read: list[Identity] = list(map(_identity_of, events))
    # Each valid identity as the one tuple remembered for it (None: not found valid yet).
    known: list[Identity | None] = list(map(_valid_identities.get, read))
    if all(known):
        return cast("list[Identity]", known)
    identities = _identities(read, known)
    suspects.update(i for i, identity in enumerate(known) if identity is None)
    return identities


def _encoded_identities(
    events: Sequence[pb.UsageEvent], encodings: list[bytes], suspects: set[int]
) -> list[Identity]:
    """Each event's identity by its encoding; an encoding not found valid before is read from
    its first event's message and proven once (those found invalid: suspects, as read)."""
    found: list[Identity | None] = list(map(_identity_by_encoding.get, encodings))
    if all(found):
        return cast("list[Identity]", found)
    invalid: set[bytes] = set()
    identities: list[Identity] = []
    for index, identity in enumerate(found):
        if identity is None:
            encoding = encodings[index]
            identity = _identity_by_encoding.get(encoding)  # proven earlier in this batch
            if identity is None:
                read: Identity = _identity_of(events[index])
                if encoding not in invalid:
                    identity = _valid_identities.get(read) or (read if _remember(read) else None)
                    if identity is None:
                        invalid.add(encoding)
                    else:
                        if len(_identity_by_encoding) >= _VALID_IDENTITIES_LIMIT:
                            _identity_by_encoding.clear()
                        _identity_by_encoding[encoding] = identity
                if identity is None:
                    suspects.add(index)
                    identity = read
        identities.append(identity)
    return identities


def _encoded_quantities(
    events: Sequence[pb.UsageEvent], encodings: list[bytes], suspects: set[int]
) -> list[tuple[int, ...]]:
    """Each event's quantities by its usage's encoding; those of a usage not found valid
    before are read from the message, checked together and, when valid, remembered."""
    found: list[tuple[int, ...] | None] = list(map(_quantities_by_encoding.get, encodings))
    if all(found):
        return cast("list[tuple[int, ...]]", found)
    new = [index for index, quantities in enumerate(found) if quantities is None]
    read: list[tuple[int, ...]] = [_quantities_of(events[index].usage) for index in new]
    valid = [True] * len(new)
    if not _quantities_valid(read):
        valid = [_quantities_valid([quantities]) for quantities in read]
    if len(_quantities_by_encoding) + len(new) > _USAGES_LIMIT:
        _quantities_by_encoding.clear()
    for index, quantities, ok in zip(new, read, valid, strict=True):
        found[index] = quantities
        if ok:
            _quantities_by_encoding[encodings[index]] = quantities
        else:
            suspects.add(index)
    return cast("list[tuple[int, ...]]", found)


def _identities(read: list[Identity], known: list[Identity | None]) -> list[Identity]:
    """The identities of a batch with some not found valid before: those found valid now
    are remembered (and their entries in `known` set); the invalid stay as read."""
    identities: list[Identity] = []
    invalid: set[Identity] = set()
    for index, (identity, found) in enumerate(zip(read, known, strict=True)):
        if found is None:
            found = _valid_identities.get(identity)
            if found is None and identity not in invalid:
                if _remember(identity):
                    found = identity
                else:
                    invalid.add(identity)
            known[index] = found
        identities.append(identity if found is None else found)
    return identities


def _remember(identity: Identity) -> bool:
    """Whether an identity is valid; a valid one is remembered."""
    gateway, organization, department, user, kind, provider, service, model = identity[:8]
    operation, purpose, decision = identity[8:]
    valid = bool(
        ID_PATTERN.fullmatch(gateway)
        and ID_PATTERN.fullmatch(organization)
        and ID_PATTERN.fullmatch(department)
        and PSEUDONYMOUS_USER_ID.fullmatch(user)
        and kind in _ACCOUNT_KINDS
        and _NAME.fullmatch(provider)
        and _NAME.fullmatch(service)
        and (not model or _MODEL.fullmatch(model))
        and operation in OPERATIONS
        and (not purpose or _NAME.fullmatch(purpose))
        and decision in _DECISIONS
    )
    if valid:
        if len(_valid_identities) >= _VALID_IDENTITIES_LIMIT:
            _valid_identities.clear()
        _valid_identities[identity] = identity
    return valid


def _quantities_valid(quantities: list[tuple[int, ...]]) -> bool:
    """Every quantity within 0 and its limit, and at least one positive, in every event."""
    if not all(map(any, quantities)) or min(map(min, quantities)) < 0:
        return False
    largest = max(map(max, quantities))
    for limit, column in _BY_LIMIT:  # only the columns whose limit the largest value passes
        if largest <= limit:
            return True
        if max(map(column, quantities)) > limit:
            return False
    return True


def _rare_field_suspects(
    events: Sequence[pb.UsageEvent], encoded: bytes | None, rare: list[bool]
) -> set[int]:
    """Events whose risk signals, decision rule ids or reported cost some rule may refuse;
    `rare` is set True for each event that may hold one of them."""
    suspects: set[int] = set()
    candidates: Iterable[int] = (
        range(len(events)) if encoded is None else events_with_rare_fields(encoded)
    )
    for i in candidates:
        rare[i] = True
        event = events[i]
        if event.HasField("risk"):
            try:
                _validate_risk(event.risk)
            except ValidationError:
                suspects.add(i)
        rules = event.decision_rule_ids
        if len(rules) > MAX_RULE_IDS or not all(map(_NAME.fullmatch, rules)):
            suspects.add(i)
        if event.HasField("reported_cost"):  # checked in full where there is one
            suspects.add(i)
    return suspects
