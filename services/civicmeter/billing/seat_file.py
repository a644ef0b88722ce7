"""The seat file (CIVICMETER_SEATS_FILE): who holds a paid seat of which service, and when.

CSV with a header (`.csv`), or YAML with a `seats:` list (`.yaml`, `.yml`), one seat each:

    seat_id,organization,department,user,provider,service,plan,start,end
    chatgpt-0001,seoul,digital-policy,u_3f2a...,openai,chatgpt,team,2024-01-01,
    claude-0007,seoul,welfare,u_91c0...,anthropic,claude,team,2024-03-15,2024-12-31

    seats:
      - {seat_id: chatgpt-0001, organization: seoul, department: digital-policy,
         user: u_3f2a..., provider: openai, service: chatgpt, plan: team, start: 2024-01-01}

`user` is the pseudonymous user id the gateways send (never a name or an e-mail); the
identifiers follow the usage events' rules (core/events/validation.py), since each seat becomes a
monthly charge event. `plan` is the subscription plan; the catalog prices it as the model of
the service (model "*" matches any plan). `start` and `end` are calendar dates (YYYY-MM-DD,
Asia/Seoul), both inclusive; an empty or absent `end` leaves the seat open.

A file is accepted whole or not at all. The first problem found is raised as SeatFileError
naming the file, the line and the reason: an unknown or missing column, a malformed value, an
end before the start, a seat id used twice in one organisation, or one user holding two
seats of one service on the same day.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.validation import TimeWindow, ValidationError, validate_event_at
from civicmeter.core.store.seats import SUBSCRIPTION, Seat, charge_event_id
from civicmeter.policy.yaml_source import At, SourceError, SourceFile, parse_yaml

REQUIRED = ("seat_id", "organization", "department", "user", "provider", "service", "plan",
            "start")  # fmt: skip
COLUMNS = (*REQUIRED, "end")
# Seat file column -> the field of the charge event that carries it, whose rules it follows.
_EVENT_FIELDS = {
    "seat_id": "event_id",
    "organization": "organization_id",
    "department": "department_id",
    "user": "user_id",
    "provider": "provider_name",
    "service": "service_id",
    "plan": "request_model",
}
_COLUMN_OF = {event_field: column for column, event_field in _EVENT_FIELDS.items()}
# The charge event id embeds the seat id and must stay within the event id's 128 characters.
MAX_SEAT_ID = 128 - len(charge_event_id("", date(2000, 1, 1)))
# ClickHouse's Date column.
FIRST_DATE, LAST_DATE = date(1970, 1, 1), date(2149, 6, 6)
_ANY_TIME = TimeWindow()


class SeatFileError(SourceError):
    """The seat file is malformed: the file, the line, the field and the reason."""


@dataclass(frozen=True)
class _Record:
    at: At  # the record's line and path, to name its fields in errors
    values: dict[str, Any]  # column -> value (text from CSV; YAML scalars)
    entry: Any = None  # the YAML mapping, which knows the line of each of its values

    def field(self, name: str) -> At:
        return self.at.key(self.entry if self.entry is not None else self.values, name)


def load_seats(path: Path) -> list[Seat]:
    """The seats in the file; SeatFileError names the file and line of the first problem."""
    file = SourceFile.of(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets write a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        failure = SeatFileError(str(path), None, "", f"cannot read the seat file: {exc}")
        failure.files = (file,)
        raise failure from None
    try:
        return parse_seats(text, str(path), path.suffix.lower())
    except SeatFileError as exc:
        exc.files = (file,)
        raise


def parse_seats(text: str, source: str, suffix: str) -> list[Seat]:
    if suffix == ".csv":
        records = list(_csv_records(text, source))
    elif suffix in (".yaml", ".yml"):
        records = list(_yaml_records(text, source))
    else:
        raise SeatFileError(source, None, "", "the seat file must be .csv, .yaml or .yml")
    seats = [_seat(record) for record in records]
    _check_unique(records, seats)
    _check_no_overlap(records, seats)
    return seats


def _csv_records(text: str, source: str) -> Iterator[_Record]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    last_line = 0  # a quoted value may span lines: a record starts after the previous one
    try:
        for row in reader:
            line, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            at = At(source, SeatFileError, "", line)
            if header is None:
                header, header_line = _header(row, at), line
            elif len(row) != len(header):
                at.fail(
                    f"has {len(row)} fields; the header on line {header_line} has {len(header)}"
                )
            else:
                yield _Record(
                    at, {name: cell.strip() for name, cell in zip(header, row, strict=True)}
                )
    except csv.Error as exc:
        raise SeatFileError(source, reader.line_num, "", f"not valid CSV: {exc}") from None
    if header is None:
        raise SeatFileError(source, None, "", f"no header line; expected {','.join(COLUMNS)}")


def _header(row: list[str], at: At) -> list[str]:
    names = [cell.strip() for cell in row]
    for name in names:
        if name not in COLUMNS:
            at.fail(f"unknown column {name!r}; expected {', '.join(COLUMNS)}")
        if names.count(name) > 1:
            at.fail(f"column {name!r} is given twice")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        at.fail(f"missing column(s) {', '.join(missing)}")
    return names


def _yaml_records(text: str, source: str) -> Iterator[_Record]:
    document = parse_yaml(text, source, SeatFileError)
    root = At(source, SeatFileError, "", getattr(document, "line", None))
    top = root.mapping(document, ("seats",))
    seats = top.get("seats")
    at = root.key(top, "seats")
    if not isinstance(seats, list):
        at.fail("must be a list of seats")
    for index, entry in enumerate(seats):
        item = at.item(seats, index)
        yield _Record(item, dict(item.mapping(entry, COLUMNS)), entry)


def _text(record: _Record, name: str) -> str:
    value = record.values.get(name)
    if value is None or value == "":
        if name in REQUIRED:
            record.field(name).fail("is required")
        return ""
    if not isinstance(value, str):
        record.field(name).fail(f"must be text, got {value!r} (quote it)")
    return value


def _date(record: _Record, name: str) -> date | None:
    value = record.values.get(name)
    at = record.field(name)
    if value is None or value == "":
        if name in REQUIRED:
            at.fail("is required")
        return None
    if isinstance(value, datetime):  # YAML reads 2024-01-01 00:00 as a time: a seat has dates
        at.fail(f"must be a date (YYYY-MM-DD), got the time {value.isoformat()}")
    if isinstance(value, date):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            at.fail(f"{value!r} is not a date (YYYY-MM-DD)")
        if len(value) != 10:
            at.fail(f"{value!r} is not a date (YYYY-MM-DD)")
    else:
        at.fail(f"must be a date (YYYY-MM-DD), got {value!r}")
    if not FIRST_DATE <= parsed <= LAST_DATE:
        at.fail(f"{parsed.isoformat()} is outside {FIRST_DATE} to {LAST_DATE}")
    return parsed


def _seat(record: _Record) -> Seat:
    text = {name: _text(record, name) for name in _EVENT_FIELDS}
    start = _date(record, "start")
    end = _date(record, "end")
    assert start is not None
    probe = pb.UsageEvent(
        event_id=text["seat_id"],
        gateway_id="seat-file",
        organization_id=text["organization"],
        department_id=text["department"],
        user_id=text["user"],
        account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
        provider_name=text["provider"],
        service_id=text["service"],
        request_model=text["plan"],
        operation_name=SUBSCRIPTION,
        usage=pb.Usage(seat_months=1),
    )
    probe.event_time.seconds = 0
    try:
        validate_event_at(probe, -math.inf, math.inf, _ANY_TIME)
    except ValidationError as exc:
        record.field(_COLUMN_OF.get(exc.field, exc.field)).fail(exc.message)
    if len(text["seat_id"]) > MAX_SEAT_ID:
        record.field("seat_id").fail(f"must be at most {MAX_SEAT_ID} characters")
    if end is not None and end < start:
        record.field("end").fail(f"{end} is before the start {start}")
    return Seat(
        organization_id=text["organization"],
        seat_id=text["seat_id"],
        department_id=text["department"],
        user_id=text["user"],
        provider_name=text["provider"],
        service_id=text["service"],
        plan=text["plan"],
        start=start,
        end=end,
    )


def _check_unique(records: list[_Record], seats: list[Seat]) -> None:
    first: dict[tuple[str, str], int] = {}
    for record, seat in zip(records, seats, strict=True):
        line = record.at.line or 0
        seen = first.setdefault(seat.key, line)
        if seen != line:
            record.field("seat_id").fail(
                f"{seat.seat_id!r} is already a seat of {seat.organization_id} (line {seen})"
            )


def _check_no_overlap(records: list[_Record], seats: list[Seat]) -> None:
    """One user holds at most one seat of a service on any day.

    Sorted by start, some two neighbours overlap whenever any two seats do; the problem is
    reported on the line of whichever of the two comes later in the file.
    """
    holdings: dict[tuple[str, str, str, str], list[tuple[Seat, int]]] = {}
    for index, seat in enumerate(seats):
        key = (seat.organization_id, seat.user_id, seat.provider_name, seat.service_id)
        holdings.setdefault(key, []).append((seat, index))
    clashes: list[tuple[int, int]] = []  # (index reported, index of the seat it overlaps)
    for holding in holdings.values():
        holding.sort(key=lambda pair: (pair[0].start, pair[1]))
        for (before, i), (after, j) in itertools.pairwise(holding):
            if before.end is None or after.start <= before.end:
                clashes.append((max(i, j), min(i, j)))
    if clashes:
        index, other = min(clashes)
        seat, held = seats[index], seats[other]
        until = held.end.isoformat() if held.end else "open-ended"
        records[index].field("start").fail(
            f"user {seat.user_id!r} already holds {seat.provider_name}/{seat.service_id} seat "
            f"{held.seat_id!r} ({held.start} to {until}, line {records[other].at.line}); "
            "one user's seats of a service must not overlap"
        )
