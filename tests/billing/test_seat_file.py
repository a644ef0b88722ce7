"""The seat file: CSV and YAML, and every rejection naming the file, the line and the reason."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from civicmeter.billing.seat_file import MAX_SEAT_ID, SeatFileError, load_seats, parse_seats
from civicmeter.core.store.seats import Seat

HEADER = "seat_id,organization,department,user,provider,service,plan,start,end"
ALICE = "u_0123456789abcdef0123456789abcdef"
BOB = "u_fedcba9876543210fedcba9876543210"


def row(seat_id: str = "s-1", user: str = ALICE, start: str = "2024-01-01", end: str = "",
        service: str = "chatgpt", organization: str = "seoul") -> str:  # fmt: skip
    return f"{seat_id},{organization},welfare,{user},openai,{service},team,{start},{end}"


def csv_error(*lines: str) -> str:
    with pytest.raises(SeatFileError) as info:
        parse_seats("\n".join(lines) + "\n", "seats.csv", ".csv")
    return str(info.value)


def test_a_csv_file_gives_its_seats() -> None:
    text = "\ufeff" + "\n".join([HEADER, row(), "", row("s-2", BOB, "2024-03-15", "2024-12-31")])
    seats = parse_seats(text.removeprefix("\ufeff"), "seats.csv", ".csv")
    assert seats == [
        Seat("seoul", "s-1", "welfare", ALICE, "openai", "chatgpt", "team", date(2024, 1, 1), None),
        Seat("seoul", "s-2", "welfare", BOB, "openai", "chatgpt", "team", date(2024, 3, 15),
             date(2024, 12, 31)),
    ]  # fmt: skip


def test_columns_may_come_in_any_order_and_end_may_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "seats.csv"
    path.write_text(
        "\ufeffuser,plan,service,provider,start,seat_id,organization,department\n"
        f"{ALICE},team,claude,anthropic,2024-05-02,c-1,jeju,safety\n",
        encoding="utf-8",
    )
    [seat] = load_seats(path)
    assert (seat.seat_id, seat.organization_id, seat.service_id, seat.end) == (
        "c-1", "jeju", "claude", None)  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([HEADER + ",colour", row() + ",red"],
         "seats.csv:1: unknown column 'colour'"),
        (["seat_id,organization,department,user,provider,service,start", "x"],
         "seats.csv:1: missing column(s) plan"),
        ([HEADER, row(), row("s-2", BOB, start="2024-02-30")],
         "seats.csv:3: start: '2024-02-30' is not a date (YYYY-MM-DD)"),
        ([HEADER, row(start="2024-1-5")],
         "seats.csv:2: start: '2024-1-5' is not a date (YYYY-MM-DD)"),
        ([HEADER, row(start="2024-06-01", end="2024-05-31")],
         "seats.csv:2: end: 2024-05-31 is before the start 2024-06-01"),
        ([HEADER, row(), "", row("s-1", BOB)],
         "seats.csv:4: seat_id: 's-1' is already a seat of seoul (line 2)"),
        ([HEADER, row(end="2024-06-30"), row("s-2", start="2024-06-30")],
         "seats.csv:3: start: user '" + ALICE + "' already holds openai/chatgpt seat 's-1' "
         "(2024-01-01 to 2024-06-30, line 2); one user's seats of a service must not overlap"),
        ([HEADER, row("s-2", start="2024-09-01"), row("s-1", BOB), row("s-3")],
         "seats.csv:4: start: user '" + ALICE + "' already holds openai/chatgpt seat 's-2' "
         "(2024-09-01 to open-ended, line 2)"),
        ([HEADER, row(user="kim@seoul.go.kr")],
         "seats.csv:2: user: must be pseudonymised: 'u_' and 32 lowercase hex digits"),
        ([HEADER, row(service="Chat GPT")],
         "seats.csv:2: service: 'Chat GPT' is not a valid identifier"),
        ([HEADER, row(organization="")],
         "seats.csv:2: organization: is required"),
        ([HEADER, row(seat_id="s" * (MAX_SEAT_ID + 1))],
         f"seats.csv:2: seat_id: must be at most {MAX_SEAT_ID} characters"),
        ([HEADER, row(), "s-2,seoul,welfare"],
         "seats.csv:3: has 3 fields; the header on line 1 has 9"),
        ([HEADER, row(start="1969-12-31")],
         "seats.csv:2: start: 1969-12-31 is outside 1970-01-01 to 2149-06-06"),
        ([HEADER, '"s-1,seoul', "x"], "seats.csv:3: not valid CSV"),
        (["", ""], "seats.csv: no header line"),
    ],
)  # fmt: skip
def test_a_bad_csv_line_is_named_with_the_reason(lines: list[str], expected: str) -> None:
    assert csv_error(*lines).startswith(expected)


def test_seats_that_touch_but_do_not_overlap_and_other_services_are_fine() -> None:
    seats = parse_seats(
        "\n".join([HEADER, row(end="2024-03-10"), row("s-2", start="2024-03-11"),
                   row("s-3", service="claude"), row("s-1", organization="busan")]),
        "seats.csv", ".csv")  # fmt: skip
    assert [(s.organization_id, s.seat_id) for s in seats] == [
        ("seoul", "s-1"), ("seoul", "s-2"), ("seoul", "s-3"), ("busan", "s-1")]  # fmt: skip


YAML = f"""\
# the seats of Seoul
seats:
  - seat_id: s-1
    organization: seoul
    department: welfare
    user: {ALICE}
    provider: openai
    service: chatgpt
    plan: team
    start: 2024-01-01
    end: "2024-12-31"
  - {{seat_id: s-2, organization: seoul, department: safety, user: {BOB}, provider: openai,
     service: chatgpt, plan: team, start: "2024-02-01"}}
"""


def test_a_yaml_file_gives_its_seats(tmp_path: Path) -> None:
    path = tmp_path / "seats.yaml"
    path.write_text(YAML, encoding="utf-8")
    assert load_seats(path) == [
        Seat("seoul", "s-1", "welfare", ALICE, "openai", "chatgpt", "team", date(2024, 1, 1),
             date(2024, 12, 31)),
        Seat("seoul", "s-2", "safety", BOB, "openai", "chatgpt", "team", date(2024, 2, 1), None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    plan: team\n", "    plan: team\n    colour: red\n",
         "seats.yaml:10: seats[0].colour: unknown key 'colour'"),
        ("    plan: team\n", "", "seats.yaml:3: seats[0].plan: is required"),
        ("start: 2024-01-01", "start: 2024-01-01 09:00:00",
         "seats.yaml:10: seats[0].start: must be a date (YYYY-MM-DD), got the time"),
        ('end: "2024-12-31"', 'end: "31.12.2024"',
         "seats.yaml:11: seats[0].end: '31.12.2024' is not a date (YYYY-MM-DD)"),
        ("seat_id: s-1", "seat_id: 1001",
         "seats.yaml:3: seats[0].seat_id: must be text, got 1001 (quote it)"),
        ("seat_id: s-2", "seat_id: s-1",
         "seats.yaml:12: seats[1].seat_id: 's-1' is already a seat of seoul (line 3)"),
        (f"user: {BOB}", f"user: {ALICE}",
         "seats.yaml:13: seats[1].start: user '" + ALICE + "' already holds openai/chatgpt seat"),
        ('end: "2024-12-31"', 'end: "2023-12-31"',
         "seats.yaml:11: seats[0].end: 2023-12-31 is before the start 2024-01-01"),
        ("seats:", "seat:", "seats.yaml:2: seat: unknown key 'seat'; expected one of seats"),
        ("seats:\n", "x: 1\nseats:\n", "seats.yaml:2: x: unknown key 'x'"),
        ("    provider: openai\n", "    provider: openai\n    provider: naver\n",
         "seats.yaml:8: seats[0].provider: the key is given twice (first on line 7)"),
    ],
)  # fmt: skip
def test_a_bad_yaml_entry_is_named_with_its_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in YAML
    path = tmp_path / "seats.yaml"
    path.write_text(YAML.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(SeatFileError) as info:
        load_seats(path)
    assert str(info.value).startswith(str(tmp_path / expected)), str(info.value)


def test_a_file_that_is_missing_or_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeatFileError, match="cannot read the seat file"):
        load_seats(tmp_path / "absent.csv")
    other = tmp_path / "seats.json"
    other.write_text("[]", encoding="utf-8")
    with pytest.raises(SeatFileError, match=r"must be \.csv, \.yaml or \.yml"):
        load_seats(other)
    with pytest.raises(SeatFileError, match=r"^seats.yml:1: seats: must be a list of seats$"):
        parse_seats("seats: {}\n", "seats.yml", ".yml")
    with pytest.raises(SeatFileError, match=r"^seats.yml:3: not valid YAML"):
        parse_seats("seats:\n  - {seat_id: [\n", "seats.yml", ".yml")
