import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.core.events.validation import validate_event
from civicmeter.gateway import PII_TYPES, PiiDetector, detect_pii, redact_pii
from loadtests.pii.corpus import generate
from tests.factories import NOW, event

# The rule for risk.pii_findings keys (civicmeter.core.events.validation).
KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def registration(birth: str, gender: str, serial: str = "12345", *, check: bool = True) -> str:
    """13 digits: YYMMDD, gender digit, 5 digits, and a right (or, with check=False, wrong)
    pre-2020 check digit; foreigners (gender 5-8) use their own rule."""
    head = birth + gender + serial
    total = sum(int(d) * w for d, w in zip(head, _RRN_WEIGHTS, strict=True))
    right = ((13 if gender in "5678" else 11) - total % 11) % 10
    return head + str(right if check else (right + 1) % 10)


def hyphenated(number: str) -> str:
    return f"{number[:6]}-{number[6:]}"


def brn(first_nine: str, *, valid: bool = True) -> str:
    """A business registration number NNN-NN-NNNNN with a right (or wrong) checksum."""
    weights = (1, 3, 7, 1, 3, 7, 1, 3, 5)
    total = sum(int(d) * w for d, w in zip(first_nine, weights, strict=True))
    total += int(first_nine[8]) * 5 // 10
    check = (10 - total % 10) % 10
    digits = first_nine + str(check if valid else (check + 3) % 10)
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


RRN = registration("900101", "1")  # issued before 2020: right check digit
RRN_2021 = registration("210315", "3", check=False)  # new scheme: random last digits
FRN = registration("850612", "5")
BRN = brn("220816251")


# --- the public surface ---------------------------------------------------------------------


def test_the_pii_types_are_pinned() -> None:
    assert PII_TYPES == (
        "kr_rrn",
        "kr_frn",
        "kr_passport",
        "kr_driver_license",
        "phone",
        "kr_brn",
        "email",
        "bank_account",
    )


def test_every_key_satisfies_the_event_rule() -> None:
    assert all(KEY.fullmatch(kind) for kind in PII_TYPES)


ALL_TYPES = (
    f"주민등록번호 {hyphenated(RRN)}. 외국인등록번호 {hyphenated(FRN)}. 여권번호 M12345678."
    " 운전면허 11-12-345678-90. 연락처 010-1234-5678."
    f" 사업자등록번호 {BRN}. 회신 hong.gildong@korea.kr. 환불 계좌 국민은행 123456-78-901234."
)


def test_every_type_is_found_and_the_findings_fit_the_usage_event() -> None:
    found = detect_pii(ALL_TYPES)
    assert found == dict.fromkeys(PII_TYPES, 1)
    assert all(KEY.fullmatch(key) for key in found)
    message = event()
    message.risk.pii_findings.update(found)
    validate_event(message, NOW)


def test_nothing_found_is_an_empty_dict() -> None:
    assert detect_pii("") == {}
    assert detect_pii("다음 회의록을 요약해 주세요. 2024년 3월 15일 오후 2시.") == {}


# --- each type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"주민등록번호 {hyphenated(RRN)}입니다.",
        f"주민번호: {RRN}",
        f"민원인 홍길동({hyphenated(RRN)})께서 서류를 제출하셨습니다.",
        f"대상자 {RRN[:6]} {RRN[6:]}",  # space, right check digit, no context
        f"대상자 {RRN}",  # bare, right check digit, no context
        f"RRN: {RRN[:6]} - {RRN[6:]}",
        f"The applicant's resident registration number is {RRN}.",
    ],
)
def test_resident_registration_numbers(text: str) -> None:
    assert detect_pii(text) == {"kr_rrn": 1}


def test_numbers_issued_since_2020_count_even_though_their_check_digit_fails() -> None:
    # Random trailing digits since October 2020: a failed check alone discards nothing.
    assert detect_pii(f"자녀 {hyphenated(RRN_2021)}") == {"kr_rrn": 1}
    assert detect_pii(f"자녀 주민등록번호 {RRN_2021}") == {"kr_rrn": 1}
    assert detect_pii(f"아동수당 신청 (주민번호 {RRN_2021[:6]} {RRN_2021[6:]})") == {"kr_rrn": 1}


def test_a_bare_number_with_a_failed_check_digit_needs_a_context_word() -> None:
    wrong = registration("900101", "1", check=False)
    assert detect_pii(f"일련번호 {wrong}") == {}
    assert detect_pii(f"번호 {wrong}") == {}
    assert detect_pii(f"주민등록번호 {wrong}") == {"kr_rrn": 1}


@pytest.mark.parametrize(
    "number",
    [
        "901301-1234567",  # month 13
        "900230-1234567",  # 30 February
        "010229-3234567",  # 29 February 2001 (not a leap year)
        "900101-9234567",  # gender digit 9
        "900101-0234567",  # gender digit 0
        "9013011234567",
        "900101-1******",  # masked
    ],
)
def test_impossible_dates_and_gender_digits_are_not_registration_numbers(number: str) -> None:
    assert detect_pii(f"주민등록번호 {number}") == {}


@pytest.mark.parametrize(
    "label", ["주문번호", "주문 번호:", "Order No.", "order number", "발주번호 #"]
)
def test_a_label_that_names_the_number_as_something_else_wins(label: str) -> None:
    # The same 13 digits, right check digit and all, are a registration number without it.
    assert detect_pii(f"번호 {RRN}") == {"kr_rrn": 1}
    assert detect_pii(f"{label} {RRN}") == {}
    assert detect_pii(f"{label} {hyphenated(RRN)}") == {}


def test_a_leap_day_is_a_valid_birth_date() -> None:
    assert detect_pii("주민등록번호 000229-3234567") == {"kr_rrn": 1}


@pytest.mark.parametrize(
    "text",
    [
        f"외국인등록번호 {hyphenated(FRN)}",
        f"ARC No. {FRN}",
        f"근로자 Nguyen Van An({hyphenated(registration('010203', '7', check=False))})",
    ],
)
def test_foreigner_registration_numbers(text: str) -> None:
    assert detect_pii(text) == {"kr_frn": 1}


@pytest.mark.parametrize(
    "text",
    [
        "여권번호 M12345678",
        "출장자 홍길동 M12345678",  # the older form needs no context
        "Passport No. S87654321",
        "여권번호 M123A4567",
        "passport number: M987Z6543",
        "출장자 명단\n성명 | 여권번호\n홍길동 | M123A4567",  # the header is the context
    ],
)
def test_passport_numbers(text: str) -> None:
    assert detect_pii(text) == {"kr_passport": 1}


@pytest.mark.parametrize(
    "text",
    [
        "제품코드 M123A4567",  # the 2021 form without a passport word
        "모델명 M12345678 장비",  # labelled as a model
        "품번 MM12345678",
        "장비 M1234567",  # 7 digits
        "ABM12345678",
        "Q12345678",  # not a passport letter
    ],
)
def test_passport_shaped_codes_are_not_passports(text: str) -> None:
    assert detect_pii(text) == {}


@pytest.mark.parametrize(
    "text",
    [
        "운전면허번호 11-12-345678-90",
        "면허번호: 28-99-123456-01 (1종 보통)",
        "본인 확인: 홍길동, 13-19-123456-01",  # region code, no context
        "운전면허 13 19 123456 01",
        "면허번호 서울 12-345678-90",
        "서울11-123456-78",
        "Driver's license number 131912345601",
    ],
)
def test_driver_licence_numbers(text: str) -> None:
    assert detect_pii(text) == {"kr_driver_license": 1}


@pytest.mark.parametrize(
    "text",
    [
        "관리코드 31-24-123456-01",  # no such region
        "번호 131912345601",  # bare, no licence word
        "코드 12-345678-90",  # no region name, no licence word
    ],
)
def test_licence_shaped_numbers_without_region_or_context_are_not_licences(text: str) -> None:
    assert detect_pii(text) == {}


@pytest.mark.parametrize(
    "number",
    [
        "010-1234-5678",
        "010.1234.5678",
        "010 1234 5678",
        "01012345678",
        "011-123-4567",
        "016-9876-5432",
        "019 234 5678",
        "(010) 1234-5678",
        "+82 10-1234-5678",
        "+82-10-1234-5678",
        "+821012345678",
        "+82 (0)10 1234 5678",
    ],
)
def test_mobile_numbers(number: str) -> None:
    assert detect_pii(f"연락처 {number}로 연락 바랍니다.") == {"phone": 1}
    assert detect_pii(f"Please call me at {number}.") == {"phone": 1}


@pytest.mark.parametrize(
    "number", ["02-2133-1234", "031-123-4567", "(02) 2133-1234", "070-1234-5678", "+82-2-2133-1234"]
)
def test_landlines_count_only_when_asked_for(number: str) -> None:
    text = f"문의: 홍보담당관 {number}"
    assert detect_pii(text) == {}
    assert PiiDetector(landlines=True).detect(text) == {"phone": 1}


@pytest.mark.parametrize(
    "number",
    [
        "012-3456-7890",  # 012 is no mobile prefix
        "010-0123-4567",  # no 010 number starts its middle group with 0
        "010-123-45678",
        "0101-234-5678",
        "010-12-3456",
        "010-****-5678",
        "1588-1234",
        "010-1234-5678-9",  # part of a longer number
        "1010-1234-5678",
    ],
)
def test_phone_like_numbers_that_are_not_phones(number: str) -> None:
    assert detect_pii(f"번호 {number} 확인") == {}


@pytest.mark.parametrize(
    "text",
    [
        f"사업자등록번호 {BRN}",
        f"(주)한빛건설({BRN})과 계약을 체결했습니다.",  # hyphenated: the checksum suffices
        f"업체 {BRN}",
        f"사업자번호 {BRN.replace('-', '')}",
        f"㈜미래정보기술({BRN.replace('-', '')})",
        f"BRN: {BRN}",
    ],
)
def test_business_registration_numbers(text: str) -> None:
    assert detect_pii(text) == {"kr_brn": 1}


def test_a_business_number_with_a_wrong_checksum_is_not_counted() -> None:
    wrong = brn("220816251", valid=False)
    assert detect_pii(f"사업자등록번호 {wrong}") == {}
    assert detect_pii(f"사업자등록번호 {wrong.replace('-', '')}") == {}


def test_bare_business_numbers_need_a_business_word() -> None:
    assert detect_pii(f"참고로 {BRN.replace('-', '')}도 확인해 주세요.") == {}


@pytest.mark.parametrize(
    "address",
    [
        "hong.gildong@korea.kr",
        "minsu_kim99@naver.com",
        "park+notice@seoul.go.kr",
        "John.Smith@example.co.uk",
        "a@b.io",
    ],
)
def test_email_addresses(address: str) -> None:
    assert detect_pii(f"회신 메일 {address}로 보내 주세요.") == {"email": 1}
    assert detect_pii(f"{address}입니다") == {"email": 1}


@pytest.mark.parametrize("text", ["@홍길동 님", "a@b", "3@1000원", "user@localhost", "@@"])
def test_not_email_addresses(text: str) -> None:
    assert detect_pii(text) == {}


@pytest.mark.parametrize(
    "text",
    [
        "환불 계좌: 국민은행 123456-78-901234 (예금주 홍길동)",
        "신한 110-123-456789로 입금해 주시기 바랍니다.",
        "우리은행 1002-123-456789",
        "하나은행 123-456789-12345",
        "농협 302-1234-5678-91",
        "카카오뱅크 3333-01-1234567",
        "계좌번호 11012345678901",
        "110-123-456789 (신한은행)",
        "Please transfer the refund to account no. 110-123-456789.",
    ],
)
def test_bank_account_numbers_with_a_bank_word(text: str) -> None:
    assert detect_pii(text) == {"bank_account": 1}


@pytest.mark.parametrize(
    "text",
    [
        "관리번호 123456-78-901234",  # no bank word
        "과제번호 1234-5678-9012",
        "입금 금액 1234567890원",  # an amount
        "입금 확인 요청 건(접수번호 2024-0315-000123)",  # labelled as something else
        "국민은행 계좌로 보내 주세요. 문서번호 123456-78-901234",  # another sentence
    ],
)
def test_account_shaped_numbers_that_are_not_accounts(text: str) -> None:
    assert detect_pii(text) == {}


# --- hard negatives, overlaps ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "시행일은 2024-03-15입니다.",
        "2024.03.15. 기준",
        "20240315",
        "총사업비는 1,234,567,890원입니다.",
        "예산 12억 3,400만 원",
        "관련 문서: 제2024-123호",
        "접수번호 2024-0315-000123",
        "주문번호 2403151234567",  # a date, then digits; labelled as an order
        "ORD-20240315-0001",
        "운송장번호 601234567890",
        "ISBN 978-89-7914-063-2",
        "ISBN 9788979140632",
        "ISBN 89-7914-063-0",
        "(04524) 서울특별시 중구 세종대로 110",
        "우편번호 03154",
        "09:00~18:00",
        "제12조 제3항",
        "서버 IP 192.168.10.25",
        "버전 2.3.1",
        "차량번호 12가 3456",
        "참석 인원은 3,245명입니다.",
        "대표번호 1588-3600",
        "123-45-67890",  # wrong checksum (67891 would be right)
        "1234567890123456",  # 16 digits
    ],
)
def test_hard_negatives(text: str) -> None:
    assert PiiDetector(landlines=True).detect(text) == {}


def test_a_registration_number_is_not_also_a_phone_or_an_account() -> None:
    text = f"국민은행 계좌 확인용 주민등록번호 {hyphenated(RRN)}"
    assert detect_pii(text) == {"kr_rrn": 1}
    assert detect_pii(f"계좌 {hyphenated('0101011234567')}")["kr_rrn"] == 1


def test_digits_inside_an_email_address_count_as_the_address() -> None:
    assert detect_pii("01012345678@naver.com") == {"email": 1}
    assert detect_pii(f"{RRN}.kim@example.com") == {"email": 1}


def test_every_finding_is_counted_once_and_repeats_are_counted() -> None:
    text = "연락처 010-1234-5678, 다시 010-1234-5678, 그리고 010 9876 5432."
    assert detect_pii(text) == {"phone": 3}


def test_a_number_inside_a_longer_number_is_not_found() -> None:
    assert detect_pii(f"9{RRN}") == {}
    assert detect_pii(f"{RRN}1") == {}
    assert detect_pii(f"A{RRN}") == {}
    assert detect_pii("12-010-1234-5678") == {}


# --- configuration --------------------------------------------------------------------------


def test_only_the_chosen_types_are_reported() -> None:
    detector = PiiDetector({"phone", "email"})
    assert detector.types == frozenset({"phone", "email"})
    assert detector.detect(ALL_TYPES) == {"phone": 1, "email": 1}


def test_a_type_not_reported_still_claims_its_matches() -> None:
    # With kr_rrn off, a resident registration number does not turn into an account.
    detector = PiiDetector(set(PII_TYPES) - {"kr_rrn"})
    assert detector.detect(f"국민은행 계좌 {hyphenated(RRN)}") == {}
    assert detect_pii(f"국민은행 계좌 {hyphenated(RRN)}") == {"kr_rrn": 1}


def test_landlines_need_phone_reported() -> None:
    assert PiiDetector({"email"}, landlines=True).detect("02-2133-1234") == {}


def test_an_unknown_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'ssn'"):
        PiiDetector({"phone", "ssn"})


def test_the_detector_describes_itself() -> None:
    assert repr(PiiDetector({"email"}, landlines=True)) == (
        "PiiDetector(types=[email], landlines=True)"
    )


# --- what comes back ------------------------------------------------------------------------

PII_VALUES = [
    hyphenated(RRN),
    FRN,
    "M12345678",
    "11-12-345678-90",
    "010-1234-5678",
    BRN,
    "hong.gildong@korea.kr",
    "123456-78-901234",
]


def test_the_result_holds_no_part_of_the_personal_information() -> None:
    found = detect_pii(ALL_TYPES)
    assert set(found) <= set(PII_TYPES)
    for key, count in found.items():
        assert type(count) is int
        assert not any(value in key for value in PII_VALUES)
        # No run of 4 characters of any finding shows up in a key.
        for value in PII_VALUES:
            assert not any(value[i : i + 4] in key for i in range(len(value) - 3))


pii_values = st.sampled_from(PII_VALUES)
prose = st.text(alphabet="가나다라 주민등록번호연락처계좌은행 abc.,:()\n", max_size=40)


@given(st.lists(st.tuples(prose, pii_values), max_size=6), prose)
def test_the_result_is_counts_by_known_type_and_nothing_else(
    parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{before} {value} " for before, value in parts) + tail
    found = PiiDetector(landlines=True).detect(text)
    assert set(found) <= set(PII_TYPES)
    assert all(KEY.fullmatch(key) for key in found)
    assert all(type(count) is int and count >= 1 for count in found.values())
    assert sum(found.values()) <= len(parts)


_NO_DIGITS_NO_AT = st.one_of(
    st.characters(exclude_categories=("Nd", "Cs"), exclude_characters="@" + string.digits),
    # what the detector looks at: passport letters, +82 and (010) openers, context words
    st.sampled_from("MSRODG+(-. \n주민등록번호계좌은행여권면허사업자"),
)


@given(st.text(alphabet=_NO_DIGITS_NO_AT, max_size=500))
def test_text_without_digits_or_at_signs_yields_nothing(text: str) -> None:
    assert detect_pii(text) == {}
    assert PiiDetector(landlines=True).detect(text) == {}


@given(st.text(max_size=300))
def test_any_text_gives_valid_findings(text: str) -> None:
    found = detect_pii(text)
    assert all(KEY.fullmatch(key) and count >= 1 for key, count in found.items())


# --- on the synthetic corpus ----------------------------------------------------------------


def test_the_corpus_is_the_same_for_the_same_seed() -> None:
    assert generate(30, seed=7) == generate(30, seed=7)
    assert generate(30, seed=7) != generate(30, seed=8)


def test_precision_and_recall_stay_above_target_on_a_small_corpus() -> None:
    # The full measurement is `python -m loadtests.pii.bench`; this guards against regressions.
    tp = dict.fromkeys(PII_TYPES, 0)
    fp = dict.fromkeys(PII_TYPES, 0)
    fn = dict.fromkeys(PII_TYPES, 0)
    for doc in generate(2000, seed=11):
        found = detect_pii(doc.text)
        for kind in PII_TYPES:
            got, true = found.get(kind, 0), doc.truth.get(kind, 0)
            tp[kind] += min(got, true)
            fp[kind] += max(got - true, 0)
            fn[kind] += max(true - got, 0)
    for kind in PII_TYPES:
        assert tp[kind] >= 200, kind
        assert tp[kind] / (tp[kind] + fp[kind]) >= 0.95, kind
        assert tp[kind] / (tp[kind] + fn[kind]) >= 0.95, kind


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"주민등록번호 {hyphenated(RRN)}입니다.", f"주민등록번호 {RRN[:6]}-{RRN[6]}******입니다."),
        (f"대상자 {RRN}", f"대상자 {RRN[:7]}******"),
        (f"RRN: {RRN[:6]} - {RRN[6:]}", f"RRN: {RRN[:6]} - {RRN[6]}******"),
        (f"외국인등록번호 {hyphenated(FRN)}", f"외국인등록번호 {FRN[:6]}-{FRN[6]}******"),
        ("연락처 010-1234-5678로", "연락처 010-****-5678로"),
        ("연락처 010.1234.5678", "연락처 010.****.5678"),
        ("연락처 010 1234 5678", "연락처 010 **** 5678"),
        ("연락처 01012345678", "연락처 010****5678"),
        ("연락처 011-123-4567", "연락처 011-***-4567"),
        ("연락처 0111234567", "연락처 011***4567"),
        ("연락처 (010) 1234-5678", "연락처 (010) ****-5678"),
        ("연락처 +82 10-1234-5678", "연락처 +82 10-****-5678"),
        ("연락처 +821012345678", "연락처 +8210****5678"),
        ("연락처 +82 (0)10 1234 5678", "연락처 +82 (0)10 **** 5678"),
        ("회신 hong.gildong@korea.kr로", "회신 h***********@korea.kr로"),
        ("회신 hong@example.go.kr", "회신 h***@example.go.kr"),
        ("회신 a@b.io", "회신 *@b.io"),
        ("여권번호 M12345678", "여권번호 M********"),
        ("여권번호 M123A4567", "여권번호 M********"),
        ("운전면허번호 11-12-345678-90", "운전면허번호 11-**-******-**"),
        ("면허번호 서울 12-345678-90", "면허번호 서울 12-******-**"),
        (f"사업자등록번호 {BRN}", f"사업자등록번호 {BRN[:3]}-**-*****"),
        ("환불 계좌: 국민은행 123456-78-901234", "환불 계좌: 국민은행 ******-**-**1234"),
        ("계좌번호 11012345678901", "계좌번호 **********8901"),
    ],
)
def test_each_type_is_masked_in_its_form(text: str, masked: str) -> None:
    redaction = redact_pii(text)
    assert redaction.text == masked
    assert redaction.findings == detect_pii(text)
    assert sum(redaction.findings.values()) == 1


def test_a_redaction_keeps_every_other_character_at_its_offset() -> None:
    redaction = redact_pii(ALL_TYPES)
    assert len(redaction.text) == len(ALL_TYPES)
    changed = [i for i, (a, b) in enumerate(zip(ALL_TYPES, redaction.text, strict=True)) if a != b]
    assert changed  # something was masked ...
    assert all(redaction.text[i] == "*" for i in changed)  # ... only by "*" ...
    inside: set[int] = set()  # ... and only inside the findings
    for value in (*PII_VALUES[:1], hyphenated(FRN), *PII_VALUES[2:]):
        start = ALL_TYPES.index(value)
        inside.update(range(start, start + len(value)))
    assert set(changed) <= inside
    assert redaction.findings == dict.fromkeys(PII_TYPES, 1)


def test_no_finding_is_left_unmasked() -> None:
    for doc in generate(400, seed=5):
        redaction = redact_pii(doc.text)
        assert redaction.findings == detect_pii(doc.text)
        assert detect_pii(redaction.text) == {}, doc.text
        assert redact_pii(redaction.text).text == redaction.text  # redacting twice: no change
        assert not any(value in redaction.text for value in PII_VALUES)


def test_only_reported_types_are_masked() -> None:
    detector = PiiDetector({"phone"})
    redaction = detector.redact(ALL_TYPES)
    assert redaction.findings == {"phone": 1}
    assert "010-****-5678" in redaction.text
    assert hyphenated(RRN) in redaction.text  # not reported: left as it is
    assert PiiDetector(landlines=True).redact("문의 02-2133-1234").text == "문의 02-****-1234"
    assert redact_pii("문의 02-2133-1234").text == "문의 02-2133-1234"


def test_text_without_findings_comes_back_as_it_is() -> None:
    text = "다음 회의록을 요약해 주세요. 2024년 3월 15일 오후 2시."
    assert redact_pii(text).text is text
    assert redact_pii(text).findings == {}


def test_the_redaction_repr_holds_no_text() -> None:
    text = "민원인 홍길동 연락처 010-1234-5678"
    shown = repr(redact_pii(text))
    assert shown == "Redaction(findings={'phone': 1})"
    assert "홍길동" not in shown and "5678" not in shown


@given(st.lists(st.tuples(prose, pii_values), max_size=6), prose)
def test_a_redaction_has_the_same_length_and_counts_and_leaves_nothing(
    parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{before} {value} " for before, value in parts) + tail
    detector = PiiDetector(landlines=True)
    redaction = detector.redact(text)
    assert len(redaction.text) == len(text)
    assert redaction.findings == detector.detect(text)
    assert detector.detect(redaction.text) == {}
