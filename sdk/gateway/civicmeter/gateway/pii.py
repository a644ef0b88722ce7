"""Personal-information detection on prompt text, before it leaves the organisation.

`detect_pii(text)` returns how many findings of each type the text holds, e.g.
``{"kr_rrn": 1, "phone": 2}``, and nothing else: no matched text, no positions. The keys are
the `risk.pii_findings` keys of the usage event (`PII_TYPES`). Every finding is counted once,
under one type: where readings overlap, one wins (a resident registration number is never
also a phone or account number), and digits inside an e-mail address are part of the address.

What counts (digit groups may be separated by "-", and where noted by a space or a dot; a
finding must not touch another letter or digit, so nothing is found inside a longer number):

- ``kr_rrn`` 주민등록번호, ``kr_frn`` 외국인등록번호: YYMMDD-GNNNNNN, with a hyphen, a space
  or nothing between. The gender digit G (1-4 resident, 5-8 foreigner) and the birth date
  must be valid. Numbers issued since October 2020 have random trailing digits, so a failed
  check digit alone never discards a number: the hyphenated form counts whatever its check
  digit; a bare or spaced number counts with a context word near it (주민, 외국인, 등록번호,
  생년월일, RRN, ARC, resident, ...) or, without one, when its check digit is right (the
  pre-2020 rule: (11 - sum % 11) % 10 with weights 2-9,2-5; foreigners (13 - sum % 11) % 10)
  and no bank word is near (then it is an account number). Masked numbers (900101-1******)
  are not counted.
- ``kr_passport``: a passport letter (M, S, R, O, D, G) and 8 digits (M12345678); the 2021
  form, letter, 3 digits, letter, 4 digits (M123A4567), only with a passport word (여권, 비자,
  출입국, passport, visa, ...) near it or, failing that, up to 2000 characters before it (a
  table whose header says 여권번호), since that shape is also the shape of product codes.
- ``kr_driver_license``: NN-NN-NNNNNN-NN ("-" or space) with a region code 11-26 or 28; the
  region-name form 서울 11-123456-78 (or NN-NNNNNN-NN with 면허 nearby); 12 bare digits only
  with 면허/driver/licence nearby.
- ``phone``: Korean mobile numbers, 010/011/016/017/018/019 then 3-4 and 4 digits, with "-",
  ".", space or nothing between, (010) 1234-5678, and +82 10 ... (also +82 (0)10 ...); an
  010 number whose middle group starts with 0 does not exist. Landlines (02, 031-064, 070;
  written with separators) count as ``phone`` only with ``PiiDetector(landlines=True)``. By
  default they are left out: in public-office prompts a landline is nearly always an
  office's published number (보도자료: 문의 02-2133-1234) and counting those would drown the
  personal findings. Representative numbers (1588-xxxx) are never counted.
- ``kr_brn`` 사업자등록번호: NNN-NN-NNNNN with the official checksum (weights 1,3,7,1,3,7,1,3,5
  plus the tens of 5 x the 9th digit); 10 bare digits also need a business word near them
  (사업자, 법인, 상호, ㈜, 세금계산서, 거래처, business, supplier, ...). A wrong checksum never
  counts.
- ``email``: local@domain.tld, ASCII.
- ``bank_account``: 10-14 digits, bare or in hyphenated groups as Korean banks write them
  (국민 6-2-6, 신한 3-3-6, 우리 4-3-6, 하나 3-6-5, 농협 3-4-4-2, 카카오뱅크 4-2-7, ...), and
  only with a bank word close by in the same sentence (계좌, 통장, 입금, 송금, 예금주, 은행,
  뱅크, 신한, 농협, 우체국, KB, NH, IBK, account, bank, ...). Never without one, nor when
  followed by 원 (an amount).

A label right before a number that names it as something else (주문번호, 접수번호, 관리번호,
모델명, 품번, Order No., Invoice, ...) keeps it from counting as a registration, passport or
account number. "Near" means within 32 characters before or 16 after, in the same sentence.

`redact_pii(text)` returns the text with every finding masked in place, character for
character (so every other character keeps its offset), and the same counts:

- ``kr_rrn``, ``kr_frn``: the birth date and gender digit stay, ``900101-1******``;
- ``phone``: the middle group, ``010-****-5678``, ``+82 10-****-5678``, ``010****5678``;
- ``email``: the local part but its first character, ``h***@example.go.kr``;
- ``kr_passport``: the letter stays, ``M********``;
- ``kr_driver_license``: the first two digits stay, ``11-**-******-**``;
- ``kr_brn``: the tax-office digits stay, ``220-**-*****``;
- ``bank_account``: the last four digits stay, ``******-**-**1234``.

Separators stay as they are. The masked forms are never found again: redacting twice changes
nothing. Only the types the detector reports are masked.

The scan is one compiled regular expression over the text: it begins with the class of
characters that can start a finding, so the engine skips all other text at C speed, and only
candidates reach Python for validation and context checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from operator import mul

__all__ = ["PII_TYPES", "PiiDetector", "Redaction", "detect_pii", "redact_pii"]

PII_TYPES: tuple[str, ...] = (
    "kr_rrn",
    "kr_frn",
    "kr_passport",
    "kr_driver_license",
    "phone",
    "kr_brn",
    "email",
    "bank_account",
)

# --- the scan -------------------------------------------------------------------------------
#
# CPython's regex engine skips quickly to the next possible start only when a pattern begins
# with a plain character class. So the pattern consumes the first character with one class,
# and each alternative checks by a lookbehind which character that was before matching the
# rest of its shape. The alternatives are tried in order; the order resolves overlaps.

# Nothing is found right after a letter or digit, nor after "<digit>-" or "<digit>." (that is
# the tail of a longer number). Checked after the first character, hence the extra ".".
_BEFORE = r"(?<![0-9A-Za-z].)(?<![0-9][-.].)"
# ... nor right before a letter, digit or "@", nor before "-<digit>" or ".<digit>".
_AFTER = r"(?![0-9A-Za-z@])(?![-.][0-9])"

# Shapes that start with a digit, after that first digit: (name, the rest of the shape).
_DIGIT_SHAPES: tuple[tuple[str, str], ...] = (
    # 11-12-345678-90: driver licence
    ("dl4", r"[0-9][- ][0-9]{2}[- ][0-9]{6}[- ][0-9]{2}"),
    # 900101-1234567, 900101 1234567, 9001011234567: registration numbers
    ("rrn", r"[0-9]{5}(?: ?- ?| )?[0-9]{7}"),
    # 010-1234-5678, 010.1234.5678, 010 1234 5678, 01012345678, 011-123-4567
    ("mobile", r"(?<=0)1[016789][-. ]?[0-9]{3,4}[-. ]?[0-9]{4}"),
    # 02-2133-1234, 031-123-4567, 070-1234-5678, 02)2133-1234: separators required
    ("landline", r"(?<=0)(?:2|[3-6][1-5]|70)(?:[-. ]|\) ?)[0-9]{3,4}[-. ][0-9]{4}"),
    # 220-81-62517: business registration
    ("brn", r"[0-9]{2}-[0-9]{2}-[0-9]{5}"),
    # (서울) 11-123456-78: driver licence after a region name
    ("dl3", r"[0-9]-[0-9]{6}-[0-9]{2}"),
    # hyphenated digit groups: bank accounts (10-14 digits, checked after)
    ("account", r"[0-9]{1,5}(?:-[0-9]{1,7}){1,3}"),
    # 10-14 bare digits
    ("run", r"[0-9]{9,13}"),
)
# Every digit-led shape holds at least 9 digits: 8 more after the first, with at most three
# separator characters between two of them. Checked once, before trying the shapes, so that
# dates, amounts and other short numbers fail fast.
_ENOUGH_DIGITS = r"(?=(?:[-. )]{0,3}[0-9]){8})"
# Shapes that start with another character: (name, that character, the rest of the shape).
_OTHER_SHAPES: tuple[tuple[str, str, str], ...] = (
    # (010) 1234-5678, (02) 2133-1234
    ("paren", r"\(", r"0(?:1[016789]|2|[3-6][1-5]|70)\) ?[0-9]{3,4}[-. ]?[0-9]{4}"),
    # +82 10-1234-5678, +82-(0)10-1234-5678, +82 2 2133 1234
    (
        "intl",
        r"\+",
        r"82[-. ]?(?:\(0\) ?)?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?[0-9]{3,4}[-. ]?[0-9]{4}",
    ),
    # M12345678, M123A4567
    ("passport", "[MSRODG]", r"[0-9]{8}|[0-9]{3}[A-Z][0-9]{4}"),
)

_CANDIDATE = re.compile(
    "[0-9+(MSRODG]"
    + _BEFORE
    + "(?:(?<=[0-9])"
    + _ENOUGH_DIGITS
    + "(?:"
    + "|".join(f"(?P<{name}>{rest})" for name, rest in _DIGIT_SHAPES)
    + ")|"
    + "|".join(f"(?<={first})(?P<{name}>{rest})" for name, first, rest in _OTHER_SHAPES)
    + ")"
    + _AFTER
)

# --- context --------------------------------------------------------------------------------
#
# Plain alternations of literals (case variants spelled out), so that a search skips at C speed.

_REGISTRATION_CONTEXT = re.compile(
    "주민|외국인|등록번호|등록증|생년월일|RRN|ARC|Resident|resident|RESIDENT|Alien|alien"
    "|Foreigner|foreigner|Registration|registration"
)
_PASSPORT_CONTEXT = re.compile(
    "여권|비자|출입국|입국|출국|Passport|passport|PASSPORT|Visa|visa|VISA"
)
_LICENCE_CONTEXT = re.compile(
    "면허|Driver|driver|DRIVER|Driving|driving|Licen[cs]e|licen[cs]e|LICEN[CS]E"
)
_BRN_CONTEXT = re.compile(
    r"사업자|법인|등록번호|업체|상호|㈜|\(주\)|주식회사|세금계산서|공급자|거래처|BRN|Business|business"
    "|BUSINESS|Company|company|Supplier|supplier|Vendor|vendor|Tax ?ID|tax ?id|Registration"
    "|registration"
)
_ACCOUNT_CONTEXT = re.compile(
    "계좌|통장|입금|송금|이체|예금주|은행|뱅크|신한|농협|우체국|새마을금고|신협|수협|토스"
    "|KB|NH|IBK|SC제일|Account|account|ACCOUNT|Bank|bank|BANK|Acct|acct|A/C|a/c"
)
# Where a sentence or line ends; context from another sentence does not count. A "." before
# a digit is not an end ("account no. 110-...").
_BREAK = re.compile(r"\n|[.!?。](?=\s+[^\s0-9])")
_BEFORE_WINDOW = 32
_AFTER_WINDOW = 16
# How far back a table header may stand (bounded, so that a long text of product codes
# costs linear time).
_TABLE_LOOKBACK = 2000


def _near(context: re.Pattern[str], text: str, start: int, end: int) -> bool:
    """Whether a context word stands close to text[start:end], in the same sentence."""
    word = context.search(text, max(0, start - _BEFORE_WINDOW), start)
    while word is not None:
        if _BREAK.search(text, word.end(), start) is None:
            return True
        word = context.search(text, word.end(), start)
    word = context.search(text, end, end + _AFTER_WINDOW)
    return word is not None and _BREAK.search(text, end, word.end()) is None


# Labels that name the number right after them as something else: 주문번호 2403151234567.
_OTHER_LABELS = (
    *(
        f"{word}{space}번호"
        for word in (
            "접수",
            "주문",
            "문서",
            "관리",
            "사건",
            "송장",
            "신청",
            "일련",
            "과제",
            "계약",
            "자산",
            "발주",
            "예약",
            "승인",
            "거래",
            "고객",
        )
        for space in ("", " ")
    ),
    "품번",
    "모델",
    "모델명",
    "제품",
    "코드",
    "Order",
    "order",
    "ORDER",
    "Ref",
    "ref",
    "REF",
    "Invoice",
    "invoice",
    "Case",
    "case",
    "Model",
    "model",
    "Serial",
    "serial",
    "S/N",
)
_LABEL_PUNCTUATION = " \t:#(.-"
_NUMBER_WORDS = ("No", "no", "NO", "Number", "number")


def _labelled_otherwise(text: str, start: int) -> bool:
    """Whether a label such as 주문번호 or Order No. stands right before `start`."""
    before = text[max(0, start - 20) : start].rstrip(_LABEL_PUNCTUATION)
    if before[-1:] in ("o", "O", "r"):  # Order No. / Case number
        for word in _NUMBER_WORDS:
            if before.endswith(word):
                before = before[: -len(word)].rstrip(_LABEL_PUNCTUATION)
                break
    return before.endswith(_OTHER_LABELS)


# --- checks ---------------------------------------------------------------------------------

# Weighted digit sums over ASCII codes: sum(map(mul, digits.encode(), weights)) - bias.
_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
_RRN_BIAS = 48 * sum(_RRN_WEIGHTS)
_BRN_WEIGHTS = (1, 3, 7, 1, 3, 7, 1, 3, 5)
_BRN_BIAS = 48 * sum(_BRN_WEIGHTS)

# The gender digit of a registration number: resident or foreigner, and the century of birth.
_GENDER = {
    "1": ("kr_rrn", 1900),
    "2": ("kr_rrn", 1900),
    "3": ("kr_rrn", 2000),
    "4": ("kr_rrn", 2000),
    "5": ("kr_frn", 1900),
    "6": ("kr_frn", 1900),
    "7": ("kr_frn", 2000),
    "8": ("kr_frn", 2000),
}
_MONTH_DAYS = frozenset(
    f"{month:02d}{day:02d}"
    for month, days in enumerate((31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), start=1)
    for day in range(1, days + 1)
)

_LICENCE_REGIONS = frozenset(str(code) for code in (*range(11, 27), 28))
_REGION_NAMES = (
    "서울",
    "부산",
    "경기",
    "경기남부",
    "경기북부",
    "강원",
    "충북",
    "충남",
    "전북",
    "전남",
    "경북",
    "경남",
    "제주",
    "대구",
    "인천",
    "광주",
    "대전",
    "울산",
    "세종",
)


def _registration_kind(digits: str) -> tuple[str, int] | None:
    """("kr_rrn" or "kr_frn", century) if the birth date and gender digit of 13 digits agree."""
    gender = _GENDER.get(digits[6])
    if gender is None or digits[2:6] not in _MONTH_DAYS:
        return None
    if digits[2:6] == "0229":
        year = gender[1] + int(digits[:2])
        if year % 4 or (year % 100 == 0 and year % 400):
            return None
    return gender


def _rrn_check_ok(digits: str) -> bool:
    """The check digit of numbers issued before October 2020: (11 - sum % 11) % 10."""
    total: int = sum(map(mul, digits.encode(), _RRN_WEIGHTS)) - _RRN_BIAS
    return (11 - total % 11) % 10 == ord(digits[12]) - 48


def _frn_check_ok(digits: str) -> bool:
    """The check digit of foreigner numbers issued before October 2020: (13 - sum % 11) % 10."""
    total: int = sum(map(mul, digits.encode(), _RRN_WEIGHTS)) - _RRN_BIAS
    return (13 - total % 11) % 10 == ord(digits[12]) - 48


def _brn_ok(digits: str) -> bool:
    """The official check of a 10-digit business registration number."""
    if digits[0] == "0":  # tax office codes start at 101
        return False
    total: int = sum(map(mul, digits.encode(), _BRN_WEIGHTS)) - _BRN_BIAS
    total += (ord(digits[8]) - 48) * 5 // 10
    return (10 - total % 10) % 10 == ord(digits[9]) - 48


# --- classification -------------------------------------------------------------------------
#
# One function per shape: (text, start, end, matched text) -> the kind of finding, or None.
# "landline" is reported as "phone" only when landlines are counted.

_LANDLINE = "landline"
_SEPARATORS = str.maketrans("", "", " -.()+")


def _digits(raw: str) -> str:
    return raw.replace("-", "").replace(" ", "").replace(".", "")  # faster than translate


def _account(text: str, start: int, end: int, digits: str) -> str | None:
    if (
        10 <= len(digits) <= 14
        and not text.startswith("원", end)  # an amount in won
        and _near(_ACCOUNT_CONTEXT, text, start, end)
        and not _labelled_otherwise(text, start)
    ):
        return "bank_account"
    return None


def _registration(text: str, start: int, end: int, raw: str) -> str | None:
    digits = _digits(raw)
    kind = _registration_kind(digits)
    if kind is None:
        return _account(text, start, end, digits)
    if "-" in raw:  # 900101-1234567: the form of a registration number, whatever the check
        return None if _labelled_otherwise(text, start) else kind[0]
    if _near(_REGISTRATION_CONTEXT, text, start, end):
        return kind[0]
    if _labelled_otherwise(text, start):  # 주문번호 2403151234567
        return None
    # Bare or spaced, with no word to say what it is: a bank word nearby makes it an account
    # number, a right check digit a registration number. (Numbers issued since October 2020
    # have random digits, but a bare 13-digit number starting with a recent date is more
    # often an order or certificate number, so those need a context word or a hyphen.)
    if _account(text, start, end, digits) is not None:
        return "bank_account"
    if kind[0] == "kr_rrn" and _rrn_check_ok(digits):
        return "kr_rrn"
    if kind[0] == "kr_frn" and _frn_check_ok(digits):
        return "kr_frn"
    return None


def _mobile(text: str, start: int, end: int, raw: str) -> str | None:
    # 010 numbers never have a middle group starting with 0.
    if raw.startswith("010") and (raw[3] if raw[3].isdigit() else raw[4]) == "0":
        return None
    return "phone"


def _landline(text: str, start: int, end: int, raw: str) -> str | None:
    return _LANDLINE


def _paren(text: str, start: int, end: int, raw: str) -> str | None:
    return "phone" if raw[2] == "1" else _LANDLINE  # (010) / (02)


def _international(text: str, start: int, end: int, raw: str) -> str | None:
    national = raw.translate(_SEPARATORS)[2:].removeprefix("0")
    return "phone" if national.startswith("1") else _LANDLINE


def _business(text: str, start: int, end: int, raw: str) -> str | None:
    digits = _digits(raw)
    return "kr_brn" if _brn_ok(digits) else _account(text, start, end, digits)


def _licence(text: str, start: int, end: int, raw: str) -> str | None:
    if raw[:2] in _LICENCE_REGIONS:
        return "kr_driver_license"
    return _account(text, start, end, _digits(raw))


def _regional_licence(text: str, start: int, end: int, raw: str) -> str | None:
    if text[max(0, start - 6) : start].rstrip().endswith(_REGION_NAMES) or _near(
        _LICENCE_CONTEXT, text, start, end
    ):
        return "kr_driver_license"
    return _account(text, start, end, _digits(raw))


def _grouped(text: str, start: int, end: int, raw: str) -> str | None:
    return _account(text, start, end, _digits(raw))


def _bare(text: str, start: int, end: int, raw: str) -> str | None:
    if len(raw) == 12 and raw[:2] in _LICENCE_REGIONS and _near(_LICENCE_CONTEXT, text, start, end):
        return "kr_driver_license"
    if len(raw) == 10 and _brn_ok(raw) and _near(_BRN_CONTEXT, text, start, end):
        return "kr_brn"
    return _account(text, start, end, raw)


def _passport(text: str, start: int, end: int, raw: str) -> str | None:
    if raw[4] <= "9":  # M12345678: the older form needs no context, only no other label
        if _labelled_otherwise(text, start) and not _near(_PASSPORT_CONTEXT, text, start, end):
            return None  # 모델명 M12345678
        return "kr_passport"
    # M123A4567, the 2021 form: a passport word near it or, failing that, somewhere in the
    # text before it (a table whose header says 여권번호, rows below), and no other label.
    if _near(_PASSPORT_CONTEXT, text, start, end):
        return "kr_passport"
    if _labelled_otherwise(text, start):
        return None
    if _PASSPORT_CONTEXT.search(text, max(0, start - _TABLE_LOOKBACK), start) is None:
        return None
    return "kr_passport"


_CLASSIFY: dict[str | None, Callable[[str, int, int, str], str | None]] = {
    "rrn": _registration,
    "mobile": _mobile,
    "landline": _landline,
    "paren": _paren,
    "intl": _international,
    "brn": _business,
    "dl4": _licence,
    "dl3": _regional_licence,
    "account": _grouped,
    "run": _bare,
    "passport": _passport,
}

# --- e-mail ---------------------------------------------------------------------------------

_EMAIL_LOCAL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
)
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)


def _find_emails(text: str) -> list[tuple[int, int]]:
    """The spans of the e-mail addresses in `text`, found from each "@"."""
    spans: list[tuple[int, int]] = []
    at = text.find("@")
    while at != -1:
        domain = _EMAIL_DOMAIN.match(text, at + 1)
        if domain is not None:
            local_start = at
            floor = max(0, at - 64)
            while local_start > floor and text[local_start - 1] in _EMAIL_LOCAL_CHARS:
                local_start -= 1
            while local_start < at and text[local_start] == ".":
                local_start += 1
            if local_start < at and text[at - 1] != ".":
                spans.append((local_start, domain.end()))
                at = text.find("@", domain.end())
                continue
        at = text.find("@", at + 1)
    return spans


# --- the detector ---------------------------------------------------------------------------


class PiiDetector:
    """Counts personal-information findings by type; see the module docstring for the rules.

    `types` limits which types are reported (default: all of `PII_TYPES`). A type that is not
    reported still claims its matches, so turning `kr_rrn` off never turns a resident
    registration number into a phone or account finding. `landlines=True` also counts
    landline numbers as `phone`. A detector holds no state between calls: share one freely,
    across threads too.
    """

    __slots__ = ("_landlines", "_report", "_types")

    def __init__(self, types: Iterable[str] | None = None, *, landlines: bool = False) -> None:
        chosen = frozenset(PII_TYPES if types is None else types)
        unknown = sorted(chosen.difference(PII_TYPES))
        if unknown:
            raise ValueError(
                f"unknown PII type {unknown[0]!r}; known types: {', '.join(PII_TYPES)}"
            )
        self._types = chosen
        self._landlines = landlines
        # What each kind of finding is reported as; kinds not in here are not reported.
        self._report = {kind: kind for kind in chosen}
        if landlines and "phone" in chosen:
            self._report[_LANDLINE] = "phone"

    @property
    def types(self) -> frozenset[str]:
        return self._types

    @property
    def landlines(self) -> bool:
        return self._landlines

    def __repr__(self) -> str:
        types = ", ".join(t for t in PII_TYPES if t in self._types)
        return f"PiiDetector(types=[{types}], landlines={self._landlines})"

    def _findings(self, text: str) -> Iterator[tuple[str, int, int]]:
        """(type, start, end) of every finding reported, e-mail addresses first."""
        report = self._report
        emails: list[tuple[int, int]] = []
        if "@" in text:
            emails = _find_emails(text)
            if "email" in report:
                for start, end in emails:
                    yield "email", start, end
        for match in _CANDIDATE.finditer(text):
            start, end = match.span()
            kind = _CLASSIFY[match.lastgroup](text, start, end, text[start:end])
            if kind is None:
                continue
            key = report.get(kind)
            if key is None:
                continue
            if emails and any(s < end and start < e for s, e in emails):
                continue  # digits inside an e-mail address
            yield key, start, end

    def detect(self, text: str) -> dict[str, int]:
        """Counts by type of the findings in `text`; an empty dict when there are none."""
        found: dict[str, int] = {}
        for key, _, _ in self._findings(text):
            found[key] = found.get(key, 0) + 1
        return found

    def redact(self, text: str, only: Collection[str] | None = None) -> Redaction:
        """`text` with every finding masked in place, and the counts `detect` gives; with
        `only`, just the findings of those types are masked (all are counted)."""
        found: dict[str, int] = {}
        pieces: list[str] = []
        done = 0
        for key, start, end in sorted(self._findings(text), key=_start):
            found[key] = found.get(key, 0) + 1
            if only is not None and key not in only:
                continue
            pieces += (text[done:start], _MASK[key](text[start:end]))
            done = end
        if not pieces:
            return Redaction(text, found)
        pieces.append(text[done:])
        return Redaction("".join(pieces), found)


@dataclass(frozen=True, slots=True)
class Redaction:
    """A text with its personal information masked, and the counts of what was masked.

    The text is left out of the repr: it is still the prompt, and a prompt is never logged.
    """

    text: str = field(repr=False)
    findings: dict[str, int]


def _start(finding: tuple[str, int, int]) -> int:
    return finding[1]


# --- masks ----------------------------------------------------------------------------------
#
# Each takes the matched text and returns it masked with "*", character for character.


def _mask_digits(raw: str, keep: Callable[[int, int], bool]) -> str:
    """`raw` with its digits masked but those whose index i of n digits `keep(i, n)` keeps."""
    n = sum(c.isdigit() for c in raw)
    out, i = [], 0
    for c in raw:
        if c.isdigit():
            out.append(c if keep(i, n) else "*")
            i += 1
        else:
            out.append(c)
    return "".join(out)


def _mask_phone(raw: str) -> str:
    groups = list(re.finditer("[0-9]+", raw))
    if len(groups) >= 3 and len(groups[-1].group()) == 4:  # 010-1234-5678: the middle group
        middle = groups[-2]
        return raw[: middle.start()] + "*" * len(middle.group()) + raw[middle.end() :]
    # 01012345678, 010-12345678: the 3 or 4 digits before the last 4.
    return _mask_digits(raw, lambda i, n: not (n - (8 if n >= 11 else 7) <= i < n - 4))


def _mask_email(raw: str) -> str:
    at = raw.index("@")
    if at == 1:  # a@b.io: the one character goes too
        return "*" + raw[1:]
    return raw[0] + "*" * (at - 1) + raw[at:]


_MASK: dict[str, Callable[[str], str]] = {
    "kr_rrn": lambda raw: _mask_digits(raw, lambda i, n: i < 7),
    "kr_frn": lambda raw: _mask_digits(raw, lambda i, n: i < 7),
    "phone": _mask_phone,
    "email": _mask_email,
    "kr_passport": lambda raw: raw[0] + "*" * (len(raw) - 1),
    "kr_driver_license": lambda raw: _mask_digits(raw, lambda i, n: i < 2),
    "kr_brn": lambda raw: _mask_digits(raw, lambda i, n: i < 3),
    "bank_account": lambda raw: _mask_digits(raw, lambda i, n: i >= n - 4),
}


_DEFAULT = PiiDetector()


def detect_pii(text: str) -> dict[str, int]:
    """Counts by type of the personal information in `text` (all types, no landlines)."""
    return _DEFAULT.detect(text)


def redact_pii(text: str) -> Redaction:
    """`text` with its personal information masked in place (all types, no landlines)."""
    return _DEFAULT.redact(text)
