"""A labelled, synthetic corpus of public-office prompts for the PII detector.

    docs = generate(5000, seed=20240315)
    docs[0].text, docs[0].truth      # "다음 민원에 대한 ...", {"kr_rrn": 1, "phone": 2}

Deterministic for a seed. Every document is a prompt a civil servant might send to an AI
service (민원 답변 작성, 보도자료, 회의록 요약, 계약 검토, 번역, ...), in Korean or English,
with personal information of each type written the ways people write it, and hard negatives
that look like it: dates, amounts in won, document numbers (제2024-123호), order and tracking
numbers, ISBNs, postal codes, times, article numbers, IP addresses, car plates, phone-like
but invalid numbers, masked numbers, business numbers with a wrong checksum, 13-digit numbers
with impossible dates or gender digits, account-like numbers with no bank in sight, product
codes shaped like passports, and offices' landline numbers. Landlines are labelled apart
(`Document.landlines`): the detector counts them as `phone` only with `landlines=True`.

Everything here is synthetic: the sentences are written from templates and the distributions
(which formats, how often a context word is present, ...) are choices made in this file, not
measurements of real prompts. Numbers are random; registration numbers issued before October
2020 carry a right check digit, later ones (and a few re-issued ones) random trailing digits.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from civicmeter.gateway.pii import PII_TYPES as PII_KINDS

DEFAULT_SEED = 20240315

# Share of body sentences that carry personal information, and that are hard negatives.
PII_SHARE = 0.24
NEGATIVE_SHARE = 0.36
ENGLISH_SHARE = 0.2
# Share of Korean documents with a pasted table (a header row, then rows of values).
TABLE_SHARE = 0.08


@dataclass(frozen=True)
class Document:
    text: str
    # How many findings of each type the text holds; types it does not hold are absent.
    truth: Mapping[str, int]
    # Landline numbers in the text (`phone` findings only when landlines are counted).
    landlines: int = 0
    language: str = "ko"  # or "en"


def generate(count: int, seed: int = DEFAULT_SEED) -> list[Document]:
    """`count` documents, the same ones for the same seed."""
    author = _Author(random.Random(seed))
    return [author.document() for _ in range(count)]


# --- words ----------------------------------------------------------------------------------

_SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
_SYLLABLES = "민서지현수영준우진하은도윤예성태희경재혜동"
_ROMAN_SURNAMES = ("kim", "lee", "park", "choi", "jung", "kang", "cho", "yoon", "jang", "hong")
_ROMAN_GIVEN = ("gildong", "minsu", "jiyoung", "seojun", "hayoon", "dohyun", "eunji", "sujin")
_FOREIGN_NAMES = (
    "Nguyen Van An",
    "Tran Thi Hoa",
    "Maria Santos",
    "Batbayar Ganbold",
    "Wang Wei",
    "Siti Rahma",
    "John Miller",
    "Aziz Karimov",
)
_EMAIL_DOMAINS = (
    "korea.kr",
    "seoul.go.kr",
    "gg.go.kr",
    "busan.go.kr",
    "naver.com",
    "daum.net",
    "hanmail.net",
    "gmail.com",
    "kakao.com",
    "snu.ac.kr",
    "example.co.kr",
)
_DEPARTMENTS = (
    "홍보담당관",
    "기획예산과",
    "민원여권과",
    "복지정책과",
    "도시계획과",
    "세정과",
    "교통정책과",
    "자치행정과",
    "문화관광과",
)
_DEPARTMENTS_EN = ("the Press Office", "the Budget Division", "Civil Affairs", "Welfare Policy")
_COMPANIES = (
    "(주)한빛건설",
    "㈜미래정보기술",
    "주식회사 푸른환경",
    "한솔엔지니어링",
    "대한종합상사",
    "새빛디자인",
    "(유)다온시스템",
)
_COMPANIES_EN = ("Hanbit Construction", "Mirae IT Co., Ltd.", "Daon Systems")
_REGIONS = (
    (11, "서울"),
    (12, "부산"),
    (13, "경기"),
    (14, "강원"),
    (15, "충북"),
    (16, "충남"),
    (17, "전북"),
    (18, "전남"),
    (19, "경북"),
    (20, "경남"),
    (21, "제주"),
    (22, "대구"),
    (23, "인천"),
    (24, "광주"),
    (25, "대전"),
    (26, "울산"),
    (28, "경기"),
)
# (Korean name, English name, digit groups as the bank writes them, first digits)
_BANKS: tuple[tuple[str, str, tuple[int, ...], str], ...] = (
    ("KB국민은행", "KB Kookmin Bank", (6, 2, 6), ""),
    ("국민은행", "Kookmin Bank", (6, 2, 6), ""),
    ("신한은행", "Shinhan Bank", (3, 3, 6), "110"),
    ("신한", "Shinhan Bank", (3, 3, 6), "140"),
    ("우리은행", "Woori Bank", (4, 3, 6), "1002"),
    ("하나은행", "Hana Bank", (3, 6, 5), ""),
    ("농협", "NH Bank", (3, 4, 4, 2), "3"),
    ("NH농협은행", "NH Bank", (3, 4, 4, 2), "30"),
    ("IBK기업은행", "IBK", (3, 6, 2, 3), ""),
    ("카카오뱅크", "KakaoBank", (4, 2, 7), "3333"),
    ("토스뱅크", "Toss Bank", (4, 4, 4), "1000"),
    ("케이뱅크", "K Bank", (3, 3, 6), "100"),
    ("SC제일은행", "SC First Bank", (3, 2, 6), ""),
    ("우체국", "Korea Post", (6, 2, 6), ""),
    ("새마을금고", "MG Saemaul", (4, 4, 4, 1), "9"),
)

_TASKS_KO = (
    "다음 민원에 대한 답변 초안을 작성해 주세요.",
    "아래 내용을 바탕으로 보도자료를 작성해 주세요.",
    "다음 회의록을 요약해 주세요.",
    "아래 계약서 초안을 검토하고 수정 의견을 주세요.",
    "다음 공문을 쉬운 말로 다시 써 주세요.",
    "아래 신청서 내용을 표로 정리해 주세요.",
    "다음 보고서의 핵심 내용을 세 줄로 요약해 주세요.",
    "아래 민원 접수 내용을 분류하고 담당 부서를 추천해 주세요.",
    "다음 내용을 영어로 번역해 주세요.",
    "아래 자료로 주간 업무보고를 작성해 주세요.",
    "다음 감사 지적사항에 대한 조치 결과 보고서를 작성해 주세요.",
    "아래 행사 개요로 초청장 문안을 만들어 주세요.",
)
_TASKS_EN = (
    "Draft a reply to the following complaint.",
    "Summarise these meeting minutes for the director.",
    "Translate the following notice into Korean.",
    "Write a press release based on the notes below.",
    "Review this contract draft and list the risks.",
    "Turn the following application into a table.",
)
_FILLER_KO = (
    "위 민원에 대하여 관련 법령과 지침을 검토한 결과를 알려드립니다.",
    "답변은 정중하고 간결한 공문체로 작성해 주세요.",
    "민원인의 불편에 공감하는 표현을 첫 문단에 넣어 주세요.",
    "관련 부서와 협의하여 추가 조치 계획을 마련할 예정입니다.",
    "보도자료는 제목, 부제, 본문, 참고자료 순으로 구성해 주세요.",
    "회의에서는 내년도 주요 업무계획과 예산 편성 방향을 논의하였습니다.",
    "참석자들은 시민 참여를 늘리는 방안에 대해 의견을 나누었습니다.",
    "주요 결정사항과 향후 일정만 간추려 요약해 주세요.",
    "어려운 행정 용어는 쉬운 우리말로 바꿔 주세요.",
    "개인정보가 포함된 부분은 답변서에서 제외해야 합니다.",
    "현장 점검 결과 시설물 안전에는 이상이 없는 것으로 확인되었습니다.",
    "다음 주까지 부서별 의견을 취합하여 제출해 주시기 바랍니다.",
    "이번 사업은 지역 주민의 생활 편의를 높이기 위해 추진됩니다.",
    "표 형식으로 정리하고 마지막에 검토 의견을 덧붙여 주세요.",
    "해당 내용은 정보공개 청구 대상에 해당하지 않습니다.",
    "지원 대상과 신청 방법을 알기 쉽게 안내해 주세요.",
    "계약 조건 중 불리한 조항이 있는지 검토해 주세요.",
    "시민 만족도 조사 결과를 바탕으로 개선 방안을 제시해 주세요.",
    "담당자 변경 사항은 별도로 안내드리겠습니다.",
    "첨부한 자료를 참고하여 보고서 초안을 작성해 주세요.",
    "안건별로 논의 내용과 결론을 구분해서 적어 주세요.",
    "민원인은 도로 보수 공사로 인한 소음 피해를 호소하고 있습니다.",
    "보조금 지급이 늦어진 사유를 설명하는 문장을 넣어 주세요.",
    "행사는 시청 대회의실에서 열릴 예정입니다.",
    "언론 보도에 대한 해명 자료를 준비해야 합니다.",
    "위원회 심의 결과는 원안 가결로 정리해 주세요.",
    "민원인께서는 처리 결과를 문자로 받기를 원하셨습니다.",
    "이 건은 소관 부서가 아니므로 이송 절차를 안내해 주세요.",
)
_FILLER_EN = (
    "Please keep the tone formal and avoid jargon.",
    "The department will review the request and respond within fourteen days.",
    "Highlight any clauses that could be unfavourable to the city.",
    "The committee agreed to revisit the proposal at the next meeting.",
    "Residents raised concerns about parking near the new library.",
    "List the action items and who is responsible for each.",
    "Do not include personal details in the published version.",
    "The applicant asked for the decision to be sent by post.",
)

# Sentences with a value, per type: (with a context word, without one) for each language.
_Templates = tuple[tuple[str, ...], tuple[str, ...]]
_PII_TEMPLATES: dict[str, dict[str, _Templates]] = {
    "kr_rrn": {
        "ko": (
            (
                "신청인 {name}의 주민등록번호는 {v}입니다.",
                "주민등록번호: {v}",
                "성명 {name}, 주민번호 {v}, 주소 서울특별시 종로구 세종대로",
                "주민등록번호({v})가 잘못 기재되어 정정을 요청하셨습니다.",
                "민원인 {name}(주민등록번호 {v})께서 등본 발급을 요청하셨습니다.",
            ),
            (
                "민원인 {name}({v})께서 서류를 제출하셨습니다.",
                "대상자: {name} {v}",
                "{name} / {v} / 기초생활수급자",
            ),
        ),
        "en": (
            ("The applicant's resident registration number is {v}.", "RRN: {v}"),
            ("Applicant: {name} ({v})",),
        ),
    },
    "kr_frn": {
        "ko": (
            (
                "외국인등록번호 {v}",
                "외국인 근로자 {fname}의 외국인등록번호는 {v}입니다.",
                "등록증 번호 {v} 확인 바랍니다.",
            ),
            ("근로자 {fname}({v}) 체류기간 연장 건입니다.",),
        ),
        "en": (
            (
                "Alien registration number: {v}",
                "ARC No. {v}",
                "Foreigner registration number {v}",
            ),
            ("Worker {fname} ({v}) requests an extension.",),
        ),
    },
    "kr_passport": {
        "ko": (
            (
                "여권번호 {v}",
                "출장자 {name}의 여권번호는 {v}입니다.",
                "비자 신청서의 여권 번호({v})를 확인해 주세요.",
                "여권({v}) 사본을 첨부합니다.",
            ),
            ("출장자 명단: {name} {v}",),
        ),
        "en": (
            ("Passport No. {v}", "Passport number: {v}, expiry 2030-08-14."),
            ("Traveller: {name}, {v}",),
        ),
    },
    "kr_driver_license": {
        "ko": (
            (
                "운전면허번호 {v}",
                "면허번호: {v} (1종 보통)",
                "운전면허증({v}) 사본을 첨부했습니다.",
                "{name} 주무관의 운전면허 번호는 {v}입니다.",
            ),
            ("본인 확인: {name}, {v}", "관용차량 운전자 {name} {v}"),
        ),
        "en": (
            ("Driver's license number {v}", "Driving licence: {v}"),
            ("Driver: {name}, {v}",),
        ),
    },
    "phone": {
        "ko": (
            (
                "연락처 {v}",
                "휴대전화 {v}로 문자 안내 부탁드립니다.",
                "민원인 휴대폰 번호: {v}",
                "HP: {v}",
            ),
            (
                "{name} 주무관({v})에게 전달해 주세요.",
                "{v}으로 연락 주시면 됩니다.",
                "회신은 {name} 님 {v}로 해 주세요.",
            ),
        ),
        "en": (
            ("Please call me at {v}.", "Mobile: {v}"),
            ("Contact {name} on {v} if needed.",),
        ),
    },
    "kr_brn": {
        "ko": (
            (
                "사업자등록번호 {v}",
                "업체명: {company}, 사업자등록번호: {v}",
                "사업자번호 {v}로 조회한 결과 휴업 상태입니다.",
                "{company}(사업자등록번호 {v})와 용역 계약을 체결했습니다.",
                "{company}({v})에서 납품한 물품입니다.",
                "거래처 {v} 명의로 발행된 세금계산서입니다.",
            ),
            ("참고로 {v}도 함께 확인해 주세요.", "{name} 대표 {v}"),
        ),
        "en": (
            (
                "Business registration number {v}",
                "BRN: {v}",
                "Supplier {company_en} ({v}) delivered late.",
            ),
            ("Please also check {v} in the system.",),
        ),
    },
    "email": {
        "ko": (
            (
                "회신 메일 {v}",
                "이메일: {v}",
                "{name} 주무관({v})에게 자료를 보내 주세요.",
                "{v}로 자료 송부 바랍니다.",
                "문의는 {v}으로 해 주세요.",
            ),
            (),
        ),
        "en": (
            ("Please reply to {v}.", "Email: {v}", "Send the draft to {v} by Friday."),
            (),
        ),
    },
    "bank_account": {
        "ko": (
            (
                "환불 계좌: {bank} {v} (예금주 {name})",
                "{bank} {v}로 입금해 주시기 바랍니다.",
                "보조금 지급 계좌는 {bank} {v}입니다.",
                "계좌번호 {v} ({bank})",
                "{name} 명의 통장 사본({bank} {v})을 첨부합니다.",
                "입금 계좌 {v}, 예금주 {name}",
            ),
            (),
        ),
        "en": (
            (
                "Please transfer the refund to account {v} ({bank_en}).",
                "Bank account: {bank_en} {v}",
            ),
            (),
        ),
    },
}
# How often a value comes with a context word (the rest use the templates without one).
CONTEXT_SHARE = {
    "kr_rrn": 0.75,
    "kr_frn": 0.8,
    "kr_passport": 0.9,
    "kr_driver_license": 0.85,
    "phone": 0.5,
    "kr_brn": 0.85,
    "email": 1.0,
    "bank_account": 1.0,
}


class _Author:
    """Writes documents, drawing every choice from one seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    # --- small draws ----------------------------------------------------------------------

    def pick(self, options: Sequence[str], weights: Sequence[float] | None = None) -> str:
        return self.r.choices(options, weights)[0]

    def digits(self, n: int, *, lead: str = "") -> str:
        """n random digits after `lead`; without a lead, the first digit is not 0."""
        if not lead:
            lead, n = str(self.r.randrange(1, 10)), n - 1
        else:
            n -= len(lead)
        return lead + (f"{self.r.randrange(10**n):0{n}d}" if n > 0 else "")

    def day(self, first: date, last: date) -> date:
        return first + timedelta(days=self.r.randrange((last - first).days + 1))

    def name(self) -> str:
        return self.r.choice(_SURNAMES) + self.r.choice(_SYLLABLES) + self.r.choice(_SYLLABLES)

    # --- values ---------------------------------------------------------------------------

    def registration(self, *, foreigner: bool) -> str:
        """A resident (or foreigner) registration number in one of its written forms."""
        if foreigner:
            born = self.day(date(1950, 1, 1), date(2018, 12, 31))
        else:
            born = self.day(date(1940, 1, 1), date(2024, 12, 31))
        male = self.r.random() < 0.5
        if born.year < 2000:
            gender = ("5" if male else "6") if foreigner else ("1" if male else "2")
        else:
            gender = ("7" if male else "8") if foreigner else ("3" if male else "4")
        head = f"{born:%y%m%d}{gender}" + self.digits(5, lead="0" if self.r.random() < 0.3 else "")
        reissued = self.r.random() < 0.03
        if born >= date(2020, 10, 1) or reissued:
            last = str(self.r.randrange(10))
        else:
            total = sum(
                int(d) * w for d, w in zip(head, (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5), strict=True)
            )
            last = str(((13 if foreigner else 11) - total % 11) % 10)
        number = head + last
        form = self.pick(("-", "", " ", " - "), (0.65, 0.25, 0.08, 0.02))
        return number[:6] + form + number[6:]

    def passport(self) -> str:
        letter = self.pick("MSRODG", (0.8, 0.08, 0.03, 0.04, 0.03, 0.02))
        if self.r.random() < 0.5:
            return letter + self.digits(8, lead=self.r.choice("0123456789"))
        return (
            letter
            + self.digits(3, lead="0")
            + self.r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
            + (self.digits(4, lead=self.r.choice("0123456789")))
        )

    def licence(self) -> str:
        code, region = self.r.choice(_REGIONS)
        year = f"{self.r.randrange(100):02d}"
        serial = self.digits(6, lead=self.r.choice("0123456789"))
        tail = f"{self.r.randrange(100):02d}"
        form = self.pick(("hyphen", "region", "space", "bare"), (0.6, 0.2, 0.1, 0.1))
        if form == "region":
            return f"{region}{self.pick(('', ' '), (0.3, 0.7))}{year}-{serial}-{tail}"
        if form == "space":
            return f"{code} {year} {serial} {tail}"
        if form == "bare":
            return f"{code}{year}{serial}{tail}"
        return f"{code}-{year}-{serial}-{tail}"

    def mobile(self) -> str:
        prefix = self.pick(("010", "011", "016", "017", "019"), (0.86, 0.05, 0.03, 0.03, 0.03))
        middle = self.digits(4, lead=str(self.r.randrange(2, 10)))
        if prefix != "010" and self.r.random() < 0.5:
            middle = middle[:3]
        last = self.digits(4, lead=str(self.r.randrange(10)))
        form = self.pick(("-", "", " ", ".", "+82", "paren"), (0.5, 0.15, 0.1, 0.1, 0.1, 0.05))
        if form == "+82":
            style = self.pick(("-", " ", "(0)"))
            if style == "(0)":
                return f"+82 (0){prefix[1:]}-{middle}-{last}"
            return f"+82{style}{prefix[1:]}{style}{middle}{style}{last}"
        if form == "paren":
            return f"({prefix}) {middle}-{last}"
        return f"{prefix}{form}{middle}{form}{last}"

    def landline(self) -> str:
        area = self.pick(
            ("02", "031", "032", "033", "042", "051", "053", "062", "064", "070"),
            (0.35, 0.15, 0.07, 0.05, 0.06, 0.08, 0.07, 0.06, 0.05, 0.06),
        )
        middle = self.digits(4 if area in ("02", "070") else self.r.choice((3, 4)))
        last = self.digits(4, lead=str(self.r.randrange(10)))
        form = self.pick(("-", ".", " ", "paren", "+82"), (0.7, 0.08, 0.07, 0.1, 0.05))
        if form == "paren":
            return f"({area}) {middle}-{last}"
        if form == "+82":
            return f"+82-{area[1:]}-{middle}-{last}"
        return f"{area}{form}{middle}{form}{last}"

    def brn_digits(self, *, valid: bool) -> str:
        office = str(self.r.randrange(101, 900))
        kind = self.pick(("01", "05", "12", "23", "81", "82", "86", "87"))
        body = office + kind + self.digits(4, lead=str(self.r.randrange(10)))
        weights = (1, 3, 7, 1, 3, 7, 1, 3, 5)
        total = sum(int(d) * w for d, w in zip(body, weights, strict=True)) + int(body[8]) * 5 // 10
        check = (10 - total % 10) % 10
        if not valid:
            check = (check + self.r.randrange(1, 10)) % 10
        return body + str(check)

    def brn(self, *, valid: bool = True) -> str:
        d = self.brn_digits(valid=valid)
        if self.r.random() < 0.15:
            return d
        return f"{d[:3]}-{d[3:5]}-{d[5:]}"

    def email(self) -> str:
        sur, given = self.r.choice(_ROMAN_SURNAMES), self.r.choice(_ROMAN_GIVEN)
        local = self.pick(
            (
                f"{given}.{sur}",
                f"{sur}{given}{self.r.randrange(100):02d}",
                f"{given[0]}{sur}",
                f"{sur}_{given}",
                f"{given}.{sur}+notice",
                f"{sur}{self.r.randrange(1000, 10000)}",
            )
        )
        return f"{local}@{self.r.choice(_EMAIL_DOMAINS)}"

    def account(self) -> tuple[str, str, str]:
        """(bank name, English bank name, account number as written)."""
        bank, bank_en, groups, lead = self.r.choice(_BANKS)
        number = self.digits(sum(groups), lead=lead)
        if self.r.random() < 0.2:
            return bank, bank_en, number
        parts, at = [], 0
        for size in groups:
            parts.append(number[at : at + size])
            at += size
        return bank, bank_en, "-".join(parts)

    # --- sentences ------------------------------------------------------------------------

    def pii_sentence(self, kind: str, lang: str) -> str:
        with_context, without = _PII_TEMPLATES[kind][lang]
        templates = with_context
        if without and self.r.random() >= CONTEXT_SHARE[kind]:
            templates = without
        bank, bank_en, account = self.account()
        values: dict[str, Callable[[], str]] = {
            "kr_rrn": lambda: self.registration(foreigner=False),
            "kr_frn": lambda: self.registration(foreigner=True),
            "kr_passport": self.passport,
            "kr_driver_license": self.licence,
            "phone": self.mobile,
            "kr_brn": self.brn,
            "email": self.email,
            "bank_account": lambda: account,
        }
        return self.r.choice(templates).format(
            v=values[kind](),
            name=self.name(),
            fname=self.r.choice(_FOREIGN_NAMES),
            company=self.r.choice(_COMPANIES),
            company_en=self.r.choice(_COMPANIES_EN),
            bank=bank,
            bank_en=bank_en,
        )

    def negative_sentence(self, lang: str) -> tuple[str, int]:
        """A sentence with numbers that are not personal information, and its landlines."""
        d = self.day(date(2019, 1, 1), date(2026, 12, 31))
        y, m, dd = d.year, d.month, d.day
        date_text = self.pick(
            (
                f"{y}-{m:02d}-{dd:02d}",
                f"{y}.{m:02d}.{dd:02d}.",
                f"{y}. {m}. {dd}.",
                f"{y}년 {m}월 {dd}일",
                f"{y}{m:02d}{dd:02d}",
                f"'{y % 100}.{m}.{dd}",
            )
        )
        amount = self.r.randrange(10_000, 50_000_000_000)
        if lang == "en":
            if self.r.random() < 0.1:  # an office's published number
                office = self.r.choice(_DEPARTMENTS_EN)
                return f"For enquiries, call {office} on {self.landline()}.", 1
            return self.pick(
                (
                    f"The meeting was held on {date_text} at {self.r.randrange(9, 18)}:30.",
                    f"The total budget is KRW {amount:,}.",
                    f"Reference: No. {y}-{self.r.randrange(1, 999)}.",
                    f"Order No. {y}{self.digits(9)} was cancelled.",
                    f"Order No. {d:%y%m%d}{self.digits(7, lead=str(self.r.randrange(10)))}",
                    f"ISBN 978-89-{self.digits(4)}-{self.digits(3)}-{self.r.randrange(10)}",
                    f"See Article {self.r.randrange(1, 60)}(3) of the Act.",
                    f"The server at 192.168.{self.r.randrange(256)}.{self.r.randrange(256)}"
                    " was patched.",
                    f"Version {self.r.randrange(1, 9)}.{self.r.randrange(20)}.{self.r.randrange(9)}"
                    " was released.",
                    f"Attendance rose by {self.r.randrange(1, 99)}.{self.r.randrange(10)}%.",
                    f"Project code {self.digits(4)}-{self.digits(4)}-{self.digits(4)}.",
                    f"Model {self.r.choice('MSRODG')}{self.digits(3)}"
                    f"{self.r.choice('ABCDEFGH')}{self.digits(4)} units were ordered.",
                )
            ), 0
        kind = self.pick(
            (
                "date",
                "amount",
                "docno",
                "phone_invalid",
                "brn_invalid",
                "bad_registration",
                "masked",
                "order",
                "isbn",
                "postal",
                "time",
                "misc",
                "code",
                "account_like",
                "bank_words",
                "landline",
            ),
            (10, 10, 8, 6, 5, 5, 3, 6, 3, 4, 4, 6, 5, 5, 4, 10),
        )
        if kind == "date":
            return self.pick(
                (
                    f"시행일은 {date_text}입니다.",
                    f"회의 일시: {date_text} {self.r.randrange(9, 18)}:00",
                    f"접수일 {date_text}, 처리 기한은 접수일로부터 14일입니다.",
                    f"{date_text} 기준 통계를 인용해 주세요.",
                )
            ), 0
        if kind == "amount":
            return self.pick(
                (
                    f"총사업비는 {amount:,}원입니다.",
                    f"계약금액 금 {amount:,}원(부가가치세 포함)",
                    f"예산 {amount}원을 편성했습니다.",
                    f"보조금 {amount:,}원이 입금될 예정입니다.",
                    f"올해 예산은 {amount // 100_000_000}억"
                    f" {amount // 10_000 % 10_000:,}만 원입니다.",
                )
            ), 0
        if kind == "docno":
            return self.pick(
                (
                    f"관련 문서: 제{y}-{self.r.randrange(1, 2000)}호",
                    f"문서번호 {self.r.choice(_DEPARTMENTS)}-{self.r.randrange(100, 99999)}"
                    f" ({date_text})",
                    f"접수번호 {y}-{m:02d}{dd:02d}-{self.digits(6)}",
                    f"사건번호 {y}구합{self.r.randrange(1000, 99999)}",
                    f"{self.r.choice(_DEPARTMENTS)}-{self.r.randrange(1000, 99999)}호로"
                    " 시행된 공문",
                )
            ), 0
        if kind == "phone_invalid":
            value = self.pick(
                (
                    f"012-{self.digits(4)}-{self.digits(4)}",
                    f"010-{self.digits(3)}-{self.digits(5)}",
                    f"0101-{self.digits(3)}-{self.digits(4)}",
                    f"010-{self.digits(2)}-{self.digits(4)}",
                    f"010-0{self.digits(3)}-{self.digits(4)}",
                    f"010-****-{self.digits(4)}",
                )
            )
            return self.pick(
                (
                    f"연락처란에 {value}라고 적혀 있어 확인이 필요합니다.",
                    f"잘못 기재된 번호 {value}는 결번입니다.",
                    f"대표번호 {self.pick(('1588', '1544', '1577'))}-{self.digits(4)}로"
                    " 안내해 주세요.",
                    "다산콜센터 120번으로 문의하시면 됩니다.",
                )
            ), 0
        if kind == "brn_invalid":
            value = self.brn(valid=False)
            return self.pick(
                (
                    f"사업자등록번호 {value}는 국세청 조회 결과 없는 번호입니다.",
                    f"신청서의 사업자번호({value})가 틀려 보완을 요청했습니다.",
                )
            ), 0
        if kind == "bad_registration":
            born = self.day(date(1950, 1, 1), date(2019, 12, 31))
            month = self.r.randrange(13, 100)
            impossible = f"{born:%y}{month:02d}{born:%d}"
            value = self.pick(
                (
                    f"{impossible}-{self.r.randrange(1, 5)}{self.digits(6)}",
                    f"{impossible}{self.r.randrange(1, 5)}{self.digits(6)}",
                    f"{born:%y%m%d}-{self.pick('09')}{self.digits(6)}",
                    f"{born:%y}0230{self.r.randrange(1, 5)}{self.digits(6)}",
                )
            )
            return self.pick(
                (
                    f"일련번호 {value}",
                    f"주민등록번호 형식 오류 사례: {value}",
                    f"관리번호 {value}로 등록되어 있습니다.",
                )
            ), 0
        if kind == "masked":
            born = self.day(date(1950, 1, 1), date(2005, 12, 31))
            return self.pick(
                (
                    f"주민등록번호 {born:%y%m%d}-{self.r.randrange(1, 5)}******",
                    f"주민번호 앞자리 {born:%y%m%d}만 기재해 주세요.",
                    f"생년월일 {born:%Y.%m.%d}.",
                )
            ), 0
        if kind == "order":
            return self.pick(
                (
                    f"주문번호 {y}{m:02d}{dd:02d}{self.digits(6)}",
                    f"ORD-{y}{m:02d}{dd:02d}-{self.digits(4)}",
                    f"운송장번호 {self.digits(12)}",
                    f"주문번호 {y}{self.digits(9)}의 배송이 지연되었습니다.",
                    f"주문번호 {d:%y%m%d}{self.digits(7, lead=str(self.r.randrange(10)))}",
                    f"증명서 발급번호 {d:%y%m%d}{self.digits(7, lead=str(self.r.randrange(10)))}",
                )
            ), 0
        if kind == "isbn":
            return self.pick(
                (
                    f"참고 도서 ISBN 978-89-{self.digits(4)}-{self.digits(3)}"
                    f"-{self.r.randrange(10)}",
                    f"ISBN 979-11-{self.digits(4)}-{self.digits(3)}-{self.r.randrange(10)}",
                    f"ISBN 97{self.pick('89')}{self.digits(10, lead='1')}",
                    f"ISBN 89-{self.digits(4)}-{self.digits(3)}-{self.r.randrange(10)}",
                )
            ), 0
        if kind == "postal":
            return self.pick(
                (
                    f"({self.digits(5, lead='0')}) 서울특별시 중구 세종대로 110",
                    f"우편번호 {self.digits(5, lead='0')}",
                )
            ), 0
        if kind == "time":
            return self.pick(
                (
                    f"오후 {self.r.randrange(1, 6)}시 {self.r.randrange(0, 60, 10)}분에"
                    " 시작합니다.",
                    f"운영 시간은 {self.r.randrange(8, 11):02d}:00~18:00입니다.",
                    f"{self.r.randrange(9, 18)}:30부터 접수합니다.",
                )
            ), 0
        if kind == "misc":
            return self.pick(
                (
                    f"제{self.r.randrange(1, 80)}조 제{self.r.randrange(1, 6)}항에 따라"
                    " 처리합니다.",
                    f"서버 IP 192.168.{self.r.randrange(256)}.{self.r.randrange(256)}",
                    f"만족도는 {self.r.randrange(50, 99)}.{self.r.randrange(10)}%로 나타났습니다.",
                    f"참석 인원은 {self.r.randrange(1000, 90000):,}명입니다.",
                    f"차량번호 {self.r.randrange(10, 999)}{self.r.choice('가나다라마')}"
                    f" {self.digits(4)}",
                    f"버전 {self.r.randrange(1, 9)}.{self.r.randrange(20)}.{self.r.randrange(9)}",
                )
            ), 0
        if kind == "code":
            letter = self.r.choice("MSRODG")
            return self.pick(
                (
                    f"제품코드 {letter}{self.digits(3)}{self.r.choice('ABCDEFGH')}{self.digits(4)}",
                    f"장비 모델 {letter}{self.digits(7)}",
                    f"품번 {letter}{letter}{self.digits(8)}",
                    f"관리코드 {self.r.randrange(30, 99)}-{self.digits(2)}-{self.digits(6)}"
                    f"-{self.digits(2)}",
                    f"모델명 {letter}{self.digits(8)} 장비를 도입했습니다.",
                )
            ), 0
        if kind == "bank_words":
            return self.pick(
                (
                    f"입금 확인 요청 건(접수번호 {y}-{m:02d}{dd:02d}-{self.digits(6)})입니다.",
                    f"계좌 개설일은 {date_text}입니다.",
                    f"이체 수수료 {self.r.choice((500, 1000))}원은 면제됩니다.",
                    "통장 사본 1부를 제출해 주세요.",
                    f"입금 금액 {amount:,}원을 확인했습니다.",
                    f"은행 영업시간은 09:00~16:00이며 문의는 1588-{self.digits(4)}입니다.",
                )
            ), 0
        if kind == "account_like":
            return self.pick(
                (
                    f"관리번호 {self.digits(3)}-{self.digits(3)}-{self.digits(6)}",
                    f"과제번호 {self.digits(4)}-{self.digits(4)}-{self.digits(4)}",
                    f"자산번호 {y}-{m:02d}-{self.digits(7)}",
                    f"계약번호 {y}-{m:02d}{dd:02d}-{self.digits(6)}",
                )
            ), 0
        # landline: an office's published number
        first, second = self.landline(), self.landline()
        dept = self.r.choice(_DEPARTMENTS)
        choices = (
            (f"문의: {dept} {first}", 1),
            (f"☎ {first}", 1),
            (f"담당: {dept} {self.name()} 주무관({first})", 1),
            (f"대표전화 {first} / 팩스 {second}", 2),
            (f"자세한 사항은 {dept}({first})로 문의하시기 바랍니다.", 1),
        )
        return choices[self.r.randrange(len(choices))]

    def table(self) -> tuple[str, Counter[str]]:
        """A pasted table: a title, a header row, and rows whose cells hold the values."""
        columns: list[tuple[str, str | None]] = [("성명", None)]
        columns += self.r.sample(
            [
                ("연락처", "phone"),
                ("이메일", "email"),
                ("여권번호", "kr_passport"),
                ("주민등록번호", "kr_rrn"),
                ("생년월일", None),
                ("소속", None),
            ],
            k=self.r.randrange(2, 4),
        )
        cell = self.pick((" | ", "\t"))
        title = self.pick(("출장자 명단", "행사 참석자 명단", "민원인 목록", "지원 대상자 현황"))
        lines = [title, cell.join(header for header, _ in columns)]
        truth: Counter[str] = Counter()
        values: dict[str, Callable[[], str]] = {
            "phone": self.mobile,
            "email": self.email,
            "kr_passport": self.passport,
            "kr_rrn": lambda: self.registration(foreigner=False),
        }
        for _ in range(self.r.randrange(2, 5)):
            row = []
            for header, kind in columns:
                if kind is not None:
                    row.append(values[kind]())
                    truth[kind] += 1
                elif header == "성명":
                    row.append(self.name())
                elif header == "생년월일":
                    row.append(f"{self.day(date(1960, 1, 1), date(2004, 12, 31)):%Y-%m-%d}")
                else:
                    row.append(self.r.choice(_DEPARTMENTS))
            lines.append(cell.join(row))
        return "\n".join(lines), truth

    def document(self) -> Document:
        lang = "en" if self.r.random() < ENGLISH_SHARE else "ko"
        tasks, filler = (_TASKS_EN, _FILLER_EN) if lang == "en" else (_TASKS_KO, _FILLER_KO)
        sentences = [self.r.choice(tasks)]
        truth: Counter[str] = Counter()
        landlines = 0
        for _ in range(self.r.randrange(4, 16)):
            roll = self.r.random()
            if roll < PII_SHARE:
                kind = self.r.choice(PII_KINDS)
                sentences.append(self.pii_sentence(kind, lang))
                truth[kind] += 1
            elif roll < PII_SHARE + NEGATIVE_SHARE:
                sentence, lines = self.negative_sentence(lang)
                sentences.append(sentence)
                landlines += lines
            else:
                sentences.append(self.r.choice(filler))
        tabled = lang == "ko" and self.r.random() < TABLE_SHARE
        if tabled:
            table, table_truth = self.table()
            sentences.insert(self.r.randrange(1, len(sentences) + 1), table)
            truth.update(table_truth)
        if tabled or self.r.random() < 0.5:
            text = "\n".join(sentences)
        else:
            text = " ".join(s if s.endswith((".", "?", "!")) else s + "." for s in sentences)
        return Document(text=text, truth=dict(truth), landlines=landlines, language=lang)
