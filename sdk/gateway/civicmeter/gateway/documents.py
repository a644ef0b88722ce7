"""Public-document leak detection on prompt text, before it leaves the organisation.

`detect_document_markings(text)` returns how many markings of each class the text holds,
e.g. ``{"confidential": 2, "approval_block": 1}``, and nothing else: no matched text, no
positions. The keys are `DOCUMENT_MARKINGS`, shaped like the `risk.pii_findings` keys of the
usage event, so that the counts can travel the same way.

The classes:

- ``classified`` 비밀: a secret grade, Ⅰ급/Ⅱ급/Ⅲ급 비밀 (also I/II/III급, 1/2/3급), a bare 비밀
  marking, a label such as 비밀등급: Ⅱ급; English TOP SECRET, SECRET.
- ``confidential`` 대외비; English CONFIDENTIAL (also "Strictly" or "Private and"), RESTRICTED.
- ``internal`` handling caveats: 취급주의, 내부용; FOUO (also the portion mark (U//FOUO)),
  For Official Use Only, Internal Use Only.
- ``nondisclosure`` disclosure decisions under the Official Information Disclosure Act:
  비공개, 공개제한, 부분공개, 열람제한; English Not for Public Release / Disclosure.
- ``document_number`` official document identifiers: 공문 numbers, an office name ending in
  과, 실, 국, 팀, 관, 단, 청, 처, 원, 소, 위원회, 의회, 센터, 본부 or 학교, a hyphen and 1-6
  digits (정보공개정책과-1234, 감사관-789호로); and 시행/접수 lines: 시행 or 접수 at the start
  of a line (or of a column) with a number (제2024-123호, 2024-000123) followed by a date. A
  시행 line whose number is an office number counts once, as that number.
- ``approval_block`` the approval block of a document (기안자, 검토자, 결재권자, 협조자, 결재, 전결,
  대결; English "Drafted by:", "Reviewed by:", "Approved by:" and the like), counted once per
  block: role labels on lines at most two apart, of at least two different roles, or one
  결재/협조 label heading a row of at least two ranks (결재 | 담당 | 팀장 | 과장).
- ``personal_data`` documents that declare personal information inside: a 개인정보 포함 marking,
  "개인정보 포함 여부: 포함", "본 문서는 개인정보를 포함하고 있습니다", a form line 주민등록번호
  수집·이용 동의 / 수집 근거, 고유식별정보(주민등록번호) 수집; English "Contains personal data".

A word counts as a marking only where it stands as one, since the same words are everywhere
in prose ("비공개 회의를 열었다", "비밀번호 변경", "대외비 문서 관리 교육"):

- alone on its line, possibly between brackets or symmetric decoration (``대외비``,
  ``[ 대외비 ]``, ``- 대외비 -``, ``// FOUO //``), possibly followed by a parenthetical
  (``비공개(제9조 제1항 제5호)``); a bullet before it alone (``○ 대외비``) is a list item, not a
  marking;
- between brackets anywhere (``[대외비]``, ``【취급주의】``, ``<비공개>``); round brackets after a
  word count only for 비밀 grades, 대외비 and handling caveats (``추진계획(대외비)``), since
  ``간부회의(비공개)`` in a public schedule is a disclosure note, not a leak;
- as the value of a label (``보안등급: 대외비``, ``공개구분 | 부분공개(5호)``,
  ``Classification: CONFIDENTIAL``), ending the cell: a list of values (``보안등급: 비밀, 대외비,
  일반``) is a description, not a marking;
- declared (``본 문서는 대외비입니다``, ``This document is confidential.``).

Approval role labels count only as labels: followed by a rank (주무관, 과장, 정보공개정책과장,
...), a name cell, a date, the end of the line, or another role label that counts; never when
a particle or a word follows (결재를 받아, 협조 부탁드립니다, 검토 후 결재 순으로).

The scan is one compiled regular expression of the trigger words, written as a trie so that
the engine skips every character that cannot start one at C speed; text without any trigger
word costs that one pass. Only the few hits reach Python for the checks above.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeAlias

__all__ = ["DOCUMENT_MARKINGS", "DocumentDetector", "detect_document_markings"]

DOCUMENT_MARKINGS: tuple[str, ...] = (
    "classified",
    "confidential",
    "internal",
    "nondisclosure",
    "document_number",
    "approval_block",
    "personal_data",
)

# --- trigger words --------------------------------------------------------------------------

_MARKING_WORDS: Mapping[str, str] = {
    **dict.fromkeys(("비밀", "TOP SECRET", "Top Secret", "SECRET", "Secret"), "classified"),
    **dict.fromkeys(
        ("대외비", "CONFIDENTIAL", "Confidential", "confidential", "RESTRICTED", "Restricted"),
        "confidential",
    ),
    **dict.fromkeys(
        (
            "취급주의",
            "취급 주의",
            "내부용",
            "FOUO",
            *(
                f"{prefix}{words}"
                for prefix in ("", "FOR ", "For ", "for ")
                for words in (
                    "OFFICIAL USE ONLY",
                    "Official Use Only",
                    "official use only",
                    "INTERNAL USE ONLY",
                    "Internal Use Only",
                    "Internal use only",
                    "internal use only",
                )
                if not (prefix == "" and words[0] in "oi")
            ),
        ),
        "internal",
    ),
    **dict.fromkeys(
        (
            "비공개",
            "공개제한",
            "공개 제한",
            "부분공개",
            "부분 공개",
            "열람제한",
            "열람 제한",
            "NOT FOR PUBLIC RELEASE",
            "Not for Public Release",
            "Not for public release",
            "NOT FOR PUBLIC DISCLOSURE",
            "Not for Public Disclosure",
            "Not for public disclosure",
        ),
        "nondisclosure",
    ),
}
# Approval role labels, by the role they name.
_ROLE_WORDS: Mapping[str, str] = {
    **dict.fromkeys(
        ("기안자", "기안", "Drafted by", "DRAFTED BY", "Prepared by", "PREPARED BY"), "draft"
    ),
    **dict.fromkeys(
        ("검토자", "검토", "Reviewed by", "REVIEWED BY", "Checked by", "CHECKED BY"), "review"
    ),
    **dict.fromkeys(
        ("결재권자", "결재자", "결재", "결 재", "Approved by", "APPROVED BY"), "approve"
    ),
    **dict.fromkeys(("협조자", "협조", "협 조"), "cooperate"),
    **dict.fromkeys(("전결", "대결"), "delegate"),
}
_PERSONAL_WORDS = (
    "개인정보",
    "주민등록번호",
    "고유식별정보",
    *(
        f"{contains} {what}"
        for contains in ("Contains", "contains")
        for what in ("personal data", "personal information", "PII")
    ),
    "CONTAINS PERSONAL DATA",
    "CONTAINS PERSONAL INFORMATION",
    "CONTAINS PII",
)
# The last syllable of an office name, then the hyphen of its document number.
_OFFICE_ENDINGS = "과실국팀관단청처원소회터부교"
_OFFICES = (
    *("과", "실", "국", "팀", "관", "단", "청", "처", "원", "소"),
    *("위원회", "의회", "센터", "본부", "학교"),
)
_LONGEST_OFFICE = 24  # syllables of an office name read back from its number's hyphen
_LINE_WORDS = ("시행", "접수")

_MARK, _ROLE, _PERSONAL, _NUMBER, _LINE = range(5)
_OFFICE_HYPHEN = (_NUMBER, "-")
_TRIGGERS: dict[str, tuple[int, str]] = {
    **{word: (_MARK, cls) for word, cls in _MARKING_WORDS.items()},
    **{word: (_ROLE, role) for word, role in _ROLE_WORDS.items()},
    **{word: (_PERSONAL, word) for word in _PERSONAL_WORDS},
    **{word: (_LINE, word) for word in _LINE_WORDS},
}


_Trie: TypeAlias = dict[str, "_Trie"]


def _trie_pattern(words: Iterable[str], *others: str) -> str:
    """One regular expression matching any of `words`, longest first, as a trie, or any of the
    `others` (each beginning with a literal). Every top-level alternative starts with a literal
    character, so the engine skips text that cannot start a match at C speed."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: _Trie) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        body = "(?:" + "|".join(branches) + ")"
        return body + "?" if "" in node else body

    return "|".join(
        [re.escape(char) + emit(child) for char, child in sorted(trie.items())] + list(others)
    )


# The hyphen of an office number, after the last syllable of an office name, before a digit:
# one literal start rather than one per syllable, as those syllables are everywhere in Korean.
_NUMBER_HYPHEN = f"-(?<=[{_OFFICE_ENDINGS}]-)(?=[0-9])"
_TRIGGER = re.compile(_trie_pattern(_TRIGGERS, _NUMBER_HYPHEN))

# --- where a marking stands -----------------------------------------------------------------

_CLOSERS = {"[": "]", "【": "】", "<": ">", "〈": "〉", "《": "》", "［": "］", "(": ")"}
_BLANK = " \t"
_DECORATION = "-=*~_/※■□◆◇●○★☆·|#+"
# What may stand left and right of a marking alone on its line (checked with str.strip).
_LEFT_OF_ALONE = "".join(_CLOSERS) + _DECORATION + _BLANK
_RIGHT_OF_ALONE = "".join(_CLOSERS.values()) + _DECORATION + _BLANK
# Classes whose marking in round brackets counts after a word: 추진계획(대외비).
_BRACKETED_AFTER_WORD = frozenset(("classified", "confidential", "internal"))

# A secret grade before 비밀: Ⅱ급 비밀, II급비밀, 2급 비밀.
_GRADE = r"(?:[ⅠⅡⅢ]|III|II|I|[123])[ \t]?급"
_GRADE_BEFORE = re.compile(_GRADE + r"[ \t]?\Z")
# 비밀등급: Ⅱ급 (a grade label with no 비밀 after the grade).
_GRADE_LABEL = re.compile(
    r"[ \t]?등급[ \t]*[:：|]?[ \t]*" + _GRADE + r"(?![ \t]?비밀)(?![0-9A-Za-z가-힣])"
)
# Cheap checks before the regular expressions below: how their matches end.
_QUALIFIER_ENDINGS = ("STRICTLY", "Strictly", "AND", "and", "&", "//")
_LABEL_ENDINGS = (
    *("등급", "분류", "구분", "여부", "범위", "cation", "CATION", "ndling", "NDLING"),
    *("rking", "RKING", "bution", "BUTION", "tivity", "TIVITY"),
)
_DECLARED_ENDINGS = ("는", "은", "is", "as", "marked", "classified")
# Words that qualify a marking on its left: STRICTLY CONFIDENTIAL, (U//FOUO).
_QUALIFIER = re.compile(
    r"(?:STRICTLY|Strictly|PRIVATE AND|Private and|PRIVATE &|Private &|[A-Z]{1,2}//)[ \t]*\Z"
)
_LABEL = re.compile(
    r"(?:(?:보안|비밀|문서|자료)[ \t]?(?:등급|분류|구분)|(?:정보)?공개[ \t]?(?:구분|여부|등급|범위)"
    r"|열람[ \t]?(?:범위|등급)|취급[ \t]?(?:구분|등급)|(?:Security |SECURITY )?(?:Classification"
    r"|classification|CLASSIFICATION)|Handling|HANDLING|Marking|MARKING|Distribution"
    r"|DISTRIBUTION|Sensitivity|SENSITIVITY)[ \t]*[:：|]?[ \t]*\Z"
)
# After a labelled value: the end of the line or cell, or the next label on the same line.
_AFTER_LABELLED = re.compile(
    r"(?:[ \t]*\([^()\n]{0,60}\))?"
    r"(?:[ \t]*\Z|[ \t]*[/|;)\]】>〉》\t]|[ \t]{2}|[ \t]+[^\n:：]{1,12}[:：])"
)
_DECLARED_BEFORE = re.compile(
    r"(?:본|이|해당|동)[ \t]?(?:문서|자료|보고서|파일|공문|내용)(?:는|은)[ \t]?\Z"
    r"|(?:This|this) (?:document|memo|memorandum|report|file|material|e-?mail|message) is"
    r" (?:marked |classified )?(?:as )?\Z"
)
_DECLARED_AFTER = re.compile(
    r"(?:[ \t]?(?:대상|문서|자료|등급))?(?:입니다|임(?![가-힣])|이므로|이니|으로 취급|로 취급"
    r"|으로 관리|로 관리)|[ \t]*(?:[.;,]|\Z)"
)


# How far a marking's line is read on either side: bounded, so that a text of many markings
# on one long line costs linear time. A marking is never judged by what stands farther away.
_LINE_WINDOW = 120


def _line(text: str, start: int, end: int) -> tuple[str, str]:
    """The text of the line before `start` and after `end`, up to `_LINE_WINDOW` each."""
    floor = max(0, start - _LINE_WINDOW)
    line_start = text.rfind("\n", floor, start) + 1 or floor
    line_end = text.find("\n", end, end + _LINE_WINDOW)
    return text[line_start:start], text[end : end + _LINE_WINDOW if line_end == -1 else line_end]


def _without_parenthetical(rest: str) -> str:
    """`rest` without a leading short parenthetical: 비공개(제9조 제1항 제5호)."""
    rest = rest.strip(_BLANK)
    if rest.startswith("("):
        close = rest.find(")")
        if 0 < close <= 60:
            return rest[close + 1 :].strip(_BLANK)
    return rest


def _declared(before: str, after: str) -> bool:
    """본 문서는 대외비입니다 / This document is confidential."""
    return (
        before.rstrip(_BLANK).endswith(_DECLARED_ENDINGS)
        and _DECLARED_BEFORE.search(before[-24:]) is not None
        and _DECLARED_AFTER.match(after) is not None
    )


def _stands_as_marking(before: str, after: str, cls: str) -> bool:
    """Whether a marking word between `before` and `after` (its line) stands as a marking."""
    if after[:1].isalnum() or before[-1:].isalnum():
        # Part of a word, or followed by a particle: prose, unless declared.
        return _declared(before, after)
    if before.rstrip(_BLANK).endswith(_QUALIFIER_ENDINGS):
        qualifier = _QUALIFIER.search(before[-16:])
        if qualifier is not None:
            before = before[: len(before) - len(qualifier.group())]
    # Between brackets.
    left, right = before.rstrip(_BLANK), after.lstrip(_BLANK)
    opener = left[-1:]
    if (
        opener in _CLOSERS
        and right.startswith(_CLOSERS[opener])
        and not right[1:2].isalpha()
        and (
            opener != "("
            or cls in _BRACKETED_AFTER_WORD
            or not left[:-1].strip(_DECORATION + _BLANK)
        )
    ):
        return True
    # Alone on its line.
    lead, trail = before.strip(_BLANK), _without_parenthetical(after)
    # A bullet alone on the left is a list item (○ 대외비): decoration must be symmetric.
    if (
        not lead.strip(_LEFT_OF_ALONE)
        and not trail.strip(_RIGHT_OF_ALONE)
        and (trail or not any(c in _DECORATION for c in lead))
    ):
        return True
    # The value of a label.
    if (
        before.rstrip(" \t:：|").endswith(_LABEL_ENDINGS)
        and _LABEL.search(before[-40:]) is not None
        and _AFTER_LABELLED.match(after) is not None
    ):
        return True
    return _declared(before, after)


def _marking(text: str, start: int, end: int, cls: str) -> bool:
    before, after = _line(text, start, end)
    if cls == "classified" and text.startswith("비밀", start):
        if _GRADE_LABEL.match(after):
            return True  # 비밀등급: Ⅱ급
        grade = _GRADE_BEFORE.search(before[-8:])
        if grade is not None:
            before = before[: len(before) - len(grade.group())]
    return _stands_as_marking(before, after, cls)


# --- document numbers -----------------------------------------------------------------------

# The serial of an office number: 1-6 digits, not the start of a longer number or a word.
_SERIAL = re.compile(r"[0-9]{1,6}(?![0-9]|[-.][0-9])(?:호|(?![A-Za-z가-힣]))")
_IDENTIFIER_AFTER_LABEL = re.compile(
    r"(?:번호)?[ \t]*[:：]?[ \t]*(?:제[ \t]?)?[0-9]{2,}(?:-[0-9]+)*[ \t]?호?[ \t]*\(?[ \t]*"
    r"(?:19|20)[0-9]{2}[ \t]?[.\-/년][ \t]?[0-9]{1,2}[ \t]?[.\-/월][ \t]?[0-9]{1,2}"
)
_OFFICE_AFTER_LABEL = re.compile(r"[ \t]*[:：]?[ \t]*[가-힣]{2,}-[0-9]")


def _office_number(text: str, hyphen: int) -> bool:
    """Whether the office name ending right before `hyphen` and the digits after it are an
    official document number (정보공개정책과-1234)."""
    start, floor = hyphen, max(0, hyphen - _LONGEST_OFFICE)
    while start > floor and "가" <= text[start - 1] <= "힣":
        start -= 1
    office = text[start:hyphen]
    return len(office) >= 3 and office.endswith(_OFFICES) and bool(_SERIAL.match(text, hyphen + 1))


def _numbered_line(text: str, start: int, end: int) -> bool:
    """Whether 시행/접수 at `start` opens a line (or a column) with a number and a date, the
    number being of another shape than an office number (which counts by itself)."""
    before, _ = _line(text, start, end)
    if before.strip(_BLANK) and not before.endswith(("  ", "\t")):
        return False
    if _OFFICE_AFTER_LABEL.match(text, end):
        return False
    return _IDENTIFIER_AFTER_LABEL.match(text, end) is not None


# --- approval blocks ------------------------------------------------------------------------

_RANKS = (
    *("주무관", "주사보", "주사", "서기보", "서기", "사무관", "서기관", "이사관"),
    *("담당관", "담당자", "담당", "팀장", "과장", "계장", "국장", "실장"),
    *("단장", "소장", "본부장", "부시장", "시장", "부군수", "군수", "부구청장"),
    *("구청장", "부지사", "지사", "차관", "장관", "원장", "관장", "센터장"),
    *("주임", "연구관", "연구사", "지도관", "지도사", "감사관", "정책관", "기획관"),
    *("비서관", "위원장", "교장", "교감"),
)
# A rank, alone or at the end of a title (정보공개정책과장), not followed by more of a word.
_HANGUL_WORD = re.compile("[가-힣]+")
_LONGEST_TITLE = 14


def _is_rank(word: str) -> bool:
    """A rank, alone or at the end of a title (정보공개정책과장), and nothing after it."""
    return len(word) <= _LONGEST_TITLE and word.endswith(_RANKS)


_ROLE_SEPARATOR = re.compile(r"[ \t]*[:：|]?[ \t]*")
_DATE_START = re.compile(r"[0-9]{1,4}[ \t]?[./\-][ \t]?[0-9]")
# A name in a cell after a -자 label: 기안자 홍길동   검토자 ...
_NAME_CELL = re.compile(r"[가-힣]{2,4}(?=[ \t]*(?:\n|\||\Z)|\t|[ \t]{2})")
_ROLE_GAP = 2  # lines between two labels of one block, at most


def _approval_blocks(text: str, labels: list[tuple[str, int, int]]) -> int:
    """How many approval blocks the role labels (role, start, end) make; see the docstring."""
    valid = [False] * len(labels)
    for i in range(len(labels) - 1, -1, -1):
        role, start, end = labels[i]
        word = text[start:end]
        if word[0].isascii():  # Drafted by: / Approved by:
            valid[i] = text[end : end + 3].lstrip(_BLANK).startswith(":")
            continue
        at = _ROLE_SEPARATOR.match(text, end).end()  # type: ignore[union-attr]
        if at == len(text) or text[at] == "\n":
            valid[i] = True
        elif i + 1 < len(labels) and labels[i + 1][1] == at:
            valid[i] = valid[i + 1]
        elif (after := _HANGUL_WORD.match(text, at)) is not None:
            # A rank (기안자 주무관 ...), or a name: in a cell after a -자 label or a label set
            # apart as a column (기안자 홍길동   검토자 ...), or followed by a rank (홍길동 주무관).
            column = word[-1] == "자" or text[end:at] != " "  # a tab, "|", ":", 2+ spaces
            valid[i] = _is_rank(after.group()) or (
                column
                and (
                    _NAME_CELL.match(text, at) is not None
                    or (
                        2 <= len(after.group()) <= 4
                        and text.startswith(" ", after.end())
                        and (title := _HANGUL_WORD.match(text, after.end() + 1)) is not None
                        and _is_rank(title.group())
                    )
                )
            )
        else:
            valid[i] = _DATE_START.match(text, at) is not None
    blocks = 0
    roles: set[str] = set()
    grid = False
    last_line = -(_ROLE_GAP + 1)
    line, counted_to = 0, 0
    for (role, start, end), ok in zip(labels, valid, strict=True):
        if not ok:
            continue
        line += text.count("\n", counted_to, start)
        counted_to = start
        if line - last_line > _ROLE_GAP:
            blocks += len(roles) >= 2 or grid
            roles, grid = set(), False
        last_line = line
        roles.add(role)
        if role in ("approve", "cooperate") and not grid:
            _, row = _line(text, start, end)
            grid = sum(map(_is_rank, _HANGUL_WORD.findall(row))) >= 2
    return blocks + (len(roles) >= 2 or grid)


# --- declared personal information ----------------------------------------------------------

_PERSONAL_VALUE = re.compile(
    r"[ \t]?(?:포함[ \t]?)?(?:여부|유무)[ \t]*[:：|][ \t]*(?:포함|있음|유|有|O|○|●|예|Y|Yes|YES)"
    r"(?![0-9A-Za-z가-힣])"
)
_PERSONAL_MARK = re.compile(r"[ \t]?포함(?:[ \t]?문서)?")
_PERSONAL_SENTENCE_BEFORE = re.compile(
    r"(?:본|이|해당|첨부(?:한|된)?)[ \t]?(?:문서|자료|파일|서류|명단|공문|보고서)(?:에는|에|는|은)"
    r"[ \t](?:[^.\n]{0,20}?[ \t])?\Z"
)
_PERSONAL_SENTENCE_AFTER = re.compile(
    r"(?:가|를|이)?[ \t]?(?:포함|수록|기재)(?:되어|하고|돼)[ \t]?있"
)
_PERSONAL_DOCUMENT_AFTER = re.compile(
    r"(?:가|이)[ \t]?포함된[ \t]?(?:문서|자료)(?:입니다|이므로|임(?![가-힣]))"
)
_COLLECTION = re.compile(
    r"[ \t]?(?:등[ \t]?고유식별정보[ \t]?)?수집[ \t]?(?:[·ㆍ･,][ \t]?|및[ \t])?(?:이용[ \t]?)?"
    r"(?:동의|근거|목적|항목)서?(?=[ \t]*(?:\Z|\n|[:：(|□☐\])】>]))"
)
_UNIQUE_ID_COLLECTION = re.compile(r"\([ \t]?주민등록번호[^()\n]{0,20}\)[ \t]?수집")
# What may open a line of a form: a number, a bullet, a bracket.
_FORM_LINE_START = re.compile(
    r"[ \t]*(?:[0-9]{1,2}[.)]|[가나다라마바사아자차카타파하][.)]|[①-⑳]|[\[【<(■□○●◆※*·-])?[ \t]*\Z"
)
_ENGLISH_DECLARED = re.compile(r"(?:This|this) (?:document|memo|file|report|attachment) \Z")


def _personal_data(text: str, start: int, end: int) -> int:
    """The end of a declaration of personal information at `start`, or 0."""
    word = text[start:end]
    before, after = _line(text, start, end)
    if word == "개인정보":
        found = _PERSONAL_VALUE.match(text, end)
        if found is not None:
            return found.end()
        mark = _PERSONAL_MARK.match(text, end)
        if mark is not None and _stands_as_marking(before, text[mark.end() : end + len(after)], ""):
            return mark.end()
        if _PERSONAL_SENTENCE_BEFORE.search(before[-40:]) and (
            _PERSONAL_SENTENCE_AFTER.match(after) or _PERSONAL_DOCUMENT_AFTER.match(after)
        ):
            return end
        return 0
    if word == "주민등록번호":
        found = _COLLECTION.match(text, end)
        if found is not None and _FORM_LINE_START.match(before):
            return found.end()
        return 0
    if word == "고유식별정보":
        found = _UNIQUE_ID_COLLECTION.match(text, end)
        if found is not None and _FORM_LINE_START.match(before):
            return found.end()
        return 0
    # Contains personal data / CONTAINS PII
    if word[0] == "c" and _ENGLISH_DECLARED.search(before[-24:]):
        return end if _DECLARED_AFTER.match(after) else 0
    return end if _stands_as_marking(before, after, "") else 0


# --- the detector ---------------------------------------------------------------------------


class DocumentDetector:
    """Counts public-document markings by class; see the module docstring for the rules.

    `classes` limits which classes are reported (default: all of `DOCUMENT_MARKINGS`). A
    detector holds no state between calls: share one freely, across threads too.
    """

    __slots__ = ("_classes",)

    def __init__(self, classes: Iterable[str] | None = None) -> None:
        chosen = frozenset(DOCUMENT_MARKINGS if classes is None else classes)
        unknown = sorted(chosen.difference(DOCUMENT_MARKINGS))
        if unknown:
            raise ValueError(
                f"unknown document marking class {unknown[0]!r};"
                f" known classes: {', '.join(DOCUMENT_MARKINGS)}"
            )
        self._classes = chosen

    @property
    def classes(self) -> frozenset[str]:
        return self._classes

    def __repr__(self) -> str:
        classes = ", ".join(c for c in DOCUMENT_MARKINGS if c in self._classes)
        return f"DocumentDetector(classes=[{classes}])"

    def detect(self, text: str) -> dict[str, int]:
        """Counts by class of the markings in `text`; an empty dict when there are none."""
        found: dict[str, int] = {}
        labels: list[tuple[str, int, int]] = []
        covered = 0  # the end of the last declaration counted: words inside it are its own
        for match in _TRIGGER.finditer(text):
            start, end = match.span()
            if start < covered:
                continue
            family, value = _TRIGGERS.get(match.group(), _OFFICE_HYPHEN)
            cls: str | None = None
            if family == _MARK:
                cls = value if _marking(text, start, end, value) else None
            elif family == _NUMBER:
                cls = "document_number" if _office_number(text, start) else None
            elif family == _ROLE:
                if not text[start - 1 : start].isalnum() and not text[end : end + 1].isalnum():
                    labels.append((value, start, end))
            elif family == _PERSONAL:
                covered = _personal_data(text, start, end)
                cls = "personal_data" if covered else None
            elif _numbered_line(text, start, end):
                cls = "document_number"
            if cls is not None:
                found[cls] = found.get(cls, 0) + 1
        if labels:
            blocks = _approval_blocks(text, labels)
            if blocks:
                found["approval_block"] = blocks
        return {cls: count for cls, count in found.items() if cls in self._classes}


_DEFAULT = DocumentDetector()


def detect_document_markings(text: str) -> dict[str, int]:
    """Counts by class of the public-document markings in `text` (all classes)."""
    return _DEFAULT.detect(text)
