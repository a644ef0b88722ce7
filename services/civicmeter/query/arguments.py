"""What a query request may ask: bounds on sizes, times and ranges, checked before any query is
built. Errors name the field and echo only bounded values.

Sizes: every string of a request is bounded (identifiers and filter values alike), and so are
the number of repeated items and the bytes of all strings together, so no request can grow a
ClickHouse statement past the engine's `max_query_size`. Enums: only the numbers they define.
Times: every time field lies in [EARLIEST, LATEST], which the engine's DateTime64 and Date
types and Python's datetime all hold, with room for the look-backs of budgets and seats; a
range covers at most MAX_RANGE, for every RPC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_RANGE = timedelta(days=3660)  # ten years
MAX_STRING_CHARS = 256  # identifiers are at most 128 characters (core.events.validation)
# Longer strings some fields hold: tokens the server signed, alert dedup keys (built from ids).
STRING_CHARS = {"page_token": 4096, "cursor": 4096, "dedup_key": 1024, "time_zone": 64}
MAX_ITEMS = 1000  # repeated values in one request, all fields together
# All strings of a request together, in UTF-8 bytes: a filter value may appear in a statement
# four times (the ledger reads two tables; the totals re-read them), escaped, and the whole
# must stay well under ClickHouse's default max_query_size of 256 KiB.
MAX_STRING_BYTES = 32 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOUNDS = f"{EARLIEST:%Y-%m-%dT%H:%M:%SZ} and {LATEST:%Y-%m-%dT%H:%M:%SZ}"


class ArgumentError(ValueError):
    """A request field is malformed; the message starts with the field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def echo(value: str, limit: int = 64) -> str:
    """A client's value as an error message may quote it: repr'd, cut to `limit` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


def check_request(request: Message) -> None:
    """Raise ArgumentError naming the first field over its bound, or holding a number its enum
    does not define (proto3 enums are open: a client may send any number)."""
    _check_message(request, "", [0, 0])  # repeated items, string bytes


_STRING, _ENUM, _MESSAGE, _NUMBER = range(4)


class _Field(NamedTuple):
    name: str
    kind: int  # _STRING, _ENUM, _MESSAGE or _NUMBER
    repeated: bool
    limit: int = 0  # characters, for strings
    enum_name: str = ""
    enum_numbers: frozenset[int] = frozenset()


# Per message type, the fields that can break a bound: strings, enums, repeated fields, and
# messages holding any of those (a Timestamp holds none, so it is never visited). Every call
# goes through here, so the walk reads plain tuples rather than descriptors.
_PLANS: dict[str, tuple[_Field, ...]] = {}


def _plan(descriptor: Any) -> tuple[_Field, ...]:  # a Descriptor (Python's or upb's)
    name: str = descriptor.full_name
    plan = _PLANS.get(name)
    if plan is None:
        _PLANS[name] = ()  # a message type that holds itself
        fields = []
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                limit = STRING_CHARS.get(field.name, MAX_STRING_CHARS)
                fields.append(_Field(field.name, _STRING, field.is_repeated, limit))
            elif field.type == FieldDescriptor.TYPE_ENUM:
                enum = field.enum_type
                numbers = frozenset(enum.values_by_number)
                fields.append(_Field(field.name, _ENUM, field.is_repeated, 0, enum.name, numbers))
            elif field.type == FieldDescriptor.TYPE_MESSAGE and (
                field.is_repeated or _plan(field.message_type)
            ):
                fields.append(_Field(field.name, _MESSAGE, field.is_repeated))
            elif field.is_repeated:  # numbers: only their count is bounded
                fields.append(_Field(field.name, _NUMBER, True))
        plan = _PLANS[name] = tuple(fields)
    return plan


def _check_message(message: Message, prefix: str, counts: list[int]) -> None:
    for field in _plan(message.DESCRIPTOR):
        if field.repeated:
            values = getattr(message, field.name)
            if not values:
                continue
            counts[0] += len(values)
            if counts[0] > MAX_ITEMS:
                raise ArgumentError(
                    prefix + field.name, f"a request holds at most {MAX_ITEMS} repeated values"
                )
            for i, item in enumerate(values):
                _check_value(field, item, f"{prefix}{field.name}[{i}]", counts)
        elif field.kind != _MESSAGE or message.HasField(field.name):
            _check_value(field, getattr(message, field.name), prefix + field.name, counts)


def _check_value(field: _Field, value: Any, path: str, counts: list[int]) -> None:
    if field.kind == _STRING:
        if not value:
            return
        if len(value) > field.limit:
            raise ArgumentError(path, f"is longer than {field.limit} characters")
        counts[1] += len(value.encode())
        if counts[1] > MAX_STRING_BYTES:
            raise ArgumentError(path, f"a request's strings total at most {MAX_STRING_BYTES} bytes")
    elif field.kind == _ENUM:
        if value and value not in field.enum_numbers:
            raise ArgumentError(path, f"{value} is not a {field.enum_name}")
    elif field.kind == _MESSAGE:
        _check_message(value, path + ".", counts)


def time_field(name: str, value: Timestamp) -> datetime:
    """The Timestamp as an aware UTC datetime, refused outside [EARLIEST, LATEST]."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise ArgumentError(name, "nanos must be between 0 and 999,999,999")
    if not EARLIEST.timestamp() <= value.seconds <= LATEST.timestamp():
        raise ArgumentError(name, f"must be between {_BOUNDS}")
    moment = _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
    if moment > LATEST:
        raise ArgumentError(name, f"must be between {_BOUNDS}")
    return moment


def time_range(start: Timestamp | None, end: Timestamp | None) -> tuple[datetime, datetime]:
    """A [start_time, end_time) range (None: the field is unset), at most MAX_RANGE long."""
    if start is None:
        raise ArgumentError("start_time", "is required")
    if end is None:
        raise ArgumentError("end_time", "is required")
    first, last = time_field("start_time", start), time_field("end_time", end)
    if last <= first:
        raise ArgumentError("end_time", "must be after start_time")
    if last - first > MAX_RANGE:
        raise ArgumentError("end_time", f"a range covers at most {MAX_RANGE.days} days")
    return first, last


def month_field(name: str, value: date_pb2.Date) -> date:
    """The first day of the month a Date names (its day is ignored), within the time bounds."""
    if not EARLIEST.year <= value.year < LATEST.year:
        raise ArgumentError(name, f"year must be between {EARLIEST.year} and {LATEST.year - 1}")
    if not 1 <= value.month <= 12:
        raise ArgumentError(name, "month must be between 1 and 12")
    return date(value.year, value.month, 1)
