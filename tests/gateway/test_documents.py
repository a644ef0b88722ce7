import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.core.events.validation import validate_event
from civicmeter.gateway import DOCUMENT_MARKINGS, DocumentDetector, detect_document_markings
from loadtests.documents.corpus import NEGATIVE_KINDS, generate
from tests.factories import NOW, event

# The rule for risk.pii_findings keys (civicmeter.core.events.validation): the document counts are
# meant to travel the same way.
KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


# --- the public surface ---------------------------------------------------------------------


def test_the_marking_classes_are_pinned() -> None:
    assert DOCUMENT_MARKINGS == (
        "classified",
        "confidential",
        "internal",
        "nondisclosure",
        "document_number",
        "approval_block",
        "personal_data",
    )
    assert all(KEY.fullmatch(cls) for cls in DOCUMENT_MARKINGS)


FULL_DOCUMENT = """다음 공문을 요약해 주세요.
Ⅱ급 비밀
[대외비]
【취급주의】
공개구분: 부분공개(제9조 제1항 제5호)
수신 각 부서장
제목 청사 보안점검 결과 보고
1. 관련: 정보공개정책과-1234(2024. 3. 2.)
※ 본 문서는 개인정보를 포함하고 있습니다.
2. 점검 결과 출입 통제 절차 일부가 지켜지지 않았습니다.  끝.

기안자 주무관 홍길동   검토자 사무관 김철수   결재권자 정보공개정책과장 전결 03/15
시행 정보공개정책과-1240 (2024. 3. 15.)     접수"""


def test_every_class_is_found_in_one_document_and_the_counts_fit_a_usage_event() -> None:
    found = detect_document_markings(FULL_DOCUMENT)
    assert found == {
        "classified": 1,
        "confidential": 1,
        "internal": 1,
        "nondisclosure": 1,
        "document_number": 2,
        "approval_block": 1,
        "personal_data": 1,
    }
    # The counts have the shape of risk.pii_findings, the map a usage event carries.
    message = event()
    message.risk.pii_findings.update(found)
    validate_event(message, NOW)


def test_nothing_found_is_an_empty_dict() -> None:
    assert detect_document_markings("") == {}
    assert detect_document_markings("다음 회의록을 요약해 주세요. 2024년 3월 15일 오후 2시.") == {}


# --- each class -----------------------------------------------------------------------------


def _only(cls: str, text: str) -> None:
    assert detect_document_markings(text) == {cls: 1}, text


@pytest.mark.parametrize(
    "text",
    [
        "비밀",
        "Ⅰ급 비밀",
        "Ⅱ급비밀",
        "Ⅲ급 비밀 (2025. 12. 31. 일반문서로 재분류)",
        "II급 비밀",
        "III급비밀",
        "2급 비밀",
        "3급비밀",
        "[Ⅱ급 비밀] 2025년 조직개편 추진계획",
        "제목 재난 대응 훈련 결과 보고(Ⅲ급 비밀)",
        "보안등급: Ⅱ급 비밀",
        "비밀등급: Ⅲ급",
        "※ 본 문서는 Ⅱ급 비밀입니다.",
        "TOP SECRET",
        "Classification: SECRET",
    ],
)
def test_classified(text: str) -> None:
    _only("classified", text)


@pytest.mark.parametrize(
    "text",
    [
        "대외비",
        "  대외비  ",
        "[대외비]",
        "[ 대외비 ]",
        "<대외비>",
        "〈대외비〉",
        "- 대외비 -",
        "■ 대외비 ■",
        "// 대외비 //",
        "제목 2025년 조직개편 추진계획(대외비)",
        "보안등급: 대외비",
        "보안 등급 | 대외비",
        "문서등급\t대외비",
        "※ 이 문서는 대외비이므로 외부 유출을 금합니다.",
        "본 자료는 대외비 문서입니다.",
        "CONFIDENTIAL",
        "STRICTLY CONFIDENTIAL",
        "[Private and Confidential]",
        "Classification: RESTRICTED",
        "This memo is confidential.",
    ],
)
def test_confidential(text: str) -> None:
    _only("confidential", text)


@pytest.mark.parametrize(
    "text",
    [
        "취급주의",
        "【취급주의】",
        "[내부용]",
        "보안분류: 내부용",
        "FOUO",
        "(U//FOUO) The division reviewed the proposal.",
        "FOR OFFICIAL USE ONLY",
        "INTERNAL USE ONLY",
        "[For Internal Use Only]",
        "This document is for internal use only.",
        "Handling: FOUO",
    ],
)
def test_internal(text: str) -> None:
    _only("internal", text)


@pytest.mark.parametrize(
    "text",
    [
        "비공개",
        "<비공개>",
        "[부분공개] 민원 처리 실태 감사 결과",
        "공개구분: 부분공개(5호)",
        "정보공개 여부 : 비공개(「공공기관의 정보공개에 관한 법률」 제9조 제1항 제6호)",
        "공개여부 | 공개제한",
        "열람범위: 열람제한",
        "비공개(제9조 제1항 제5호)",
        "NOT FOR PUBLIC RELEASE",
        "Distribution: Not for public disclosure",
    ],
)
def test_nondisclosure(text: str) -> None:
    _only("nondisclosure", text)


@pytest.mark.parametrize(
    "text",
    [
        "정보공개정책과-1234",
        "1. 관련: 자치행정과-56(2024. 3. 2.)",
        "감사관-789호로 시행된 공문",
        "문서번호 | 지방세심의위원회-12",
        "새빛초등학교-3301",
        "시행 정보공개정책과-1234 (2024. 3. 15.)     접수",
        "시행 제2024-123호 (2024. 3. 15.)",
        "접수 제12345호(2024.03.16.)",
        "접수번호 2024-000123 (2024. 3. 16.)",
        "기안자 주무관 홍길동\n시행 민원실-77 (2024.3.15.)",
    ],
)
def test_document_numbers(text: str) -> None:
    assert detect_document_markings(text).get("document_number") == 1, text


def test_a_line_with_both_numbers_counts_both() -> None:
    line = "시행 정보공개정책과-1234 (2024. 3. 15.)    접수 민원실-77 (2024. 3. 16.)"
    assert detect_document_markings(line) == {"document_number": 2}


@pytest.mark.parametrize(
    "text",
    [
        "기안자 주무관 홍길동   검토자 사무관 김철수   결재권자 과장 전결 03/15",
        "기안자 주무관 홍길동\n검토자 사무관 김철수\n결재권자 정보공개정책과장 전결 2024. 3. 15.",
        "기안자 주무관 홍길동\n검토자 팀장 김철수\n결재권자 과장 이영희\n협조자 주무관 박민수",
        "결재 | 담당 | 팀장 | 과장",
        "결 재\t주무관\t팀장\t국장",
        "결재 | 담당 | 팀장 | 과장\n | 홍길동 | 김철수 | 전결 03/15",
        "기안  홍길동\n검토  김철수\n결재  과장 03/15",
        "Drafted by: Kim Minji, Policy Officer\nApproved by: Lee Jun, Director",
        "Prepared by: Kim Minji\nChecked by: Park Jiwoo",
        "기안자 홍길동 주무관   검토자 김철수 사무관",
        "기안자 | 홍길동\n검토자 | 김철수",
    ],
)
def test_approval_blocks(text: str) -> None:
    _only("approval_block", text)


def test_two_approval_blocks_far_apart_count_twice() -> None:
    block = "기안자 주무관 홍길동   검토자 사무관 김철수   결재권자 과장 전결 03/15"
    filler = "\n".join(["세부 내용은 붙임과 같습니다."] * 4)
    assert detect_document_markings(f"{block}\n{filler}\n{block}") == {"approval_block": 2}


@pytest.mark.parametrize(
    "text",
    [
        "[개인정보 포함]",
        "【개인정보 포함 문서】",
        "개인정보 포함",
        "개인정보 포함(주민등록번호, 연락처)",
        "개인정보 포함 여부: 포함",
        "개인정보 유무 | 있음",
        "※ 본 문서는 개인정보를 포함하고 있으므로 취급에 주의하시기 바랍니다.",
        "※ 이 자료에는 개인정보가 포함되어 있습니다.",
        "첨부한 명단에는 민원인의 개인정보가 포함되어 있습니다.",
        "주민등록번호 수집·이용 동의서",
        "■ 주민등록번호 수집 근거: 「주민등록법 시행령」 제47조",
        "3. 주민등록번호 수집 목적: 본인 확인",
        "□ 고유식별정보(주민등록번호) 수집 동의  □ 동의함  □ 동의하지 않음",
        "[CONTAINS PII]",
        "This document contains personal data.",
    ],
)
def test_declared_personal_information(text: str) -> None:
    _only("personal_data", text)


# --- hard negatives -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # password notices
        "[비밀번호 변경 안내]\n업무포털 비밀번호를 90일마다 변경해 주시기 바랍니다.",
        "비밀번호: 영문, 숫자, 특수문자를 조합하여 9자리 이상",
        "비밀번호",
        "비밀리에 진행된 협상",
        # security-training announcements
        "[보안 교육 안내]\n교육 내용: 비밀 및 대외비 문서 관리 요령, 비밀번호 관리, 개인정보 보호",
        "보안등급 분류 기준(비밀, 대외비, 일반)을 숙지해 주시기 바랍니다.",
        "보안등급: 비밀, 대외비, 일반",
        "○ 비밀\n○ 대외비\n○ 일반",
        "대외비 문서는 출력 후 반드시 파쇄해야 합니다.",
        "취급주의 표시가 된 자료는 별도로 보관합니다.",
        # news articles that mention markings
        "위원회는 이날 오후 비공개 회의를 열고 후속 대책을 논의했다.",
        "회의는 비공개로 진행됐으며 결과는 다음 주 발표될 예정이다.",
        "야당은 정부가 대외비 문건을 근거로 정책을 결정했다고 비판했다.",
        "군 당국은 '2급 비밀' 문서가 유출된 경위를 조사하고 있다.",
        "2급 비밀을 유출한 혐의로 기소됐다.",
        "이 문서는 대외비로 분류돼 있었던 것으로 알려졌다.",
        "공개 여부는 비공개로 결정됐다.",
        "The report was marked CONFIDENTIAL by the ministry, officials said.",
        "Please keep this confidential until the announcement.",
        "The Secretary of State met the SECRETARIAT.",
        # public press releases
        "보도자료\n보도시점 2024. 3. 15. 06:00  배포 2024. 3. 14.\n"
        "개인정보 보호 강화를 위한 주민등록번호 수집 법정주의 시행\n"
        "앞으로 법령 근거 없는 주민등록번호 수집이 금지된다.\n시행일: 2024. 7. 1.\n"
        "담당 부서 정보공개정책과  책임자 과장 홍길동 (044-205-1234)\n"
        "담당자 사무관 김철수 (044-205-1235)",
        # public schedules and notices
        "10:00 간부회의(비공개)\n14:00 시정조정위원회(비공개)\n16:00 시민 간담회(공개)",
        "서울특별시 공고 제2024-123호",
        "버스 시청-3번 정류장",
        "코로나19-2차 접종, 교육청-2025학년도 계획",
        "민원 접수 기간은 2024. 3. 1.부터 2주간입니다.",
        "접수일 2024. 3. 15.",
        # prose that uses approval words as words
        "과장님 결재를 받아 협조 요청 공문을 보냈습니다.",
        "관계 부서의 협조 부탁드립니다.",
        "검토 결과 추가 예산 편성이 필요합니다.",
        "붙임 자료를 참고하여 검토 후 결재 바랍니다.",
        "전결 규정에 따라 국장 전결로 처리합니다.",
        "기안 검토 결재 순으로 진행합니다.",
        "결재 라인: 담당 → 팀장 → 과장",
        "수신 내부결재",
        "The plan was approved by the council on 3 March.",
        "Approved by the committee, the plan goes ahead.",
        "기안 홍길동 주무관이 작성하고 검토 김철수 사무관이 확인했다.",
        "검토자 의견을 반영하여 결재권자에게 보고합니다.",
        # advice about personal information
        "개인정보가 포함된 부분은 답변서에서 제외해야 합니다.",
        "개인정보 포함 여부를 확인한 뒤 제출해 주세요.",
        "주민등록번호 수집을 최소화하는 방향으로 서식을 정비합니다.",
        "개인정보가 포함된 문서는 파기해야 합니다.",
        "주민등록번호 수집 근거가 없는 서식을 정비합니다.",
    ],
)
def test_hard_negatives(text: str) -> None:
    assert detect_document_markings(text) == {}, text


def test_a_marking_inside_a_word_or_before_a_particle_is_prose() -> None:
    assert detect_document_markings("비공개") == {"nondisclosure": 1}
    assert detect_document_markings("비공개로") == {}
    assert detect_document_markings("정보비공개") == {}
    assert detect_document_markings("[비공개]로") == {}


def test_many_markings_on_one_long_line_are_each_counted() -> None:
    # Each is judged by its own neighbourhood of the line, not the whole line.
    assert detect_document_markings("[대외비] " * 5000) == {"confidential": 5000}
    assert detect_document_markings("정보공개정책과-1 " * 5000) == {"document_number": 5000}
    assert detect_document_markings("비밀" * 5000) == {}


# --- configuration --------------------------------------------------------------------------


def test_only_the_chosen_classes_are_reported() -> None:
    detector = DocumentDetector({"confidential", "approval_block"})
    assert detector.classes == frozenset({"confidential", "approval_block"})
    assert detector.detect(FULL_DOCUMENT) == {"confidential": 1, "approval_block": 1}


def test_an_unknown_class_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'secret'"):
        DocumentDetector({"confidential", "secret"})


def test_the_detector_describes_itself() -> None:
    assert repr(DocumentDetector({"internal", "classified"})) == (
        "DocumentDetector(classes=[classified, internal])"
    )


# --- what comes back ------------------------------------------------------------------------


def test_the_result_holds_no_part_of_the_text() -> None:
    found = detect_document_markings(FULL_DOCUMENT)
    words = {w for w in re.split(r"\s+", FULL_DOCUMENT) if len(w) >= 2}
    for key, count in found.items():
        assert key in DOCUMENT_MARKINGS
        assert type(count) is int
        # No word of the document, Korean or a number, shows up in a key.
        assert not any(word in key for word in words if not word.isascii())
        assert not any(ch.isdigit() for ch in key)


MARKINGS = st.sampled_from(
    ["[대외비]", "Ⅱ급 비밀", "공개구분: 비공개", "정보공개정책과-1234", "[개인정보 포함]", "FOUO"]
)
lines = st.text(alphabet="가나다 비밀번호공개결재협조 abc.,:()", max_size=30)


@given(st.lists(st.tuples(lines, MARKINGS), max_size=6), lines)
def test_the_result_is_counts_by_known_class_and_nothing_else(
    parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{before}\n{marking}\n" for before, marking in parts) + tail
    found = detect_document_markings(text)
    assert set(found) <= set(DOCUMENT_MARKINGS)
    assert all(type(count) is int and count >= 1 for count in found.values())
    assert sum(found.values()) >= len(parts)  # every marking on its own line counts


@given(st.text(max_size=400))
def test_any_text_gives_valid_findings(text: str) -> None:
    found = detect_document_markings(text)
    assert all(cls in DOCUMENT_MARKINGS and count >= 1 for cls, count in found.items())


# --- on the synthetic corpus ----------------------------------------------------------------


def test_the_corpus_is_the_same_for_the_same_seed() -> None:
    assert generate(30, seed=7) == generate(30, seed=7)
    assert generate(30, seed=7) != generate(30, seed=8)


def test_the_corpus_holds_every_class_and_every_kind_of_hard_negative() -> None:
    docs = generate(1500, seed=3)
    kinds = {doc.kind for doc in docs}
    assert set(NEGATIVE_KINDS) <= kinds
    for cls in DOCUMENT_MARKINGS:
        assert sum(doc.truth.get(cls, 0) for doc in docs) >= 50, cls
    # Hard negatives hold the words the detector looks for, and nothing counts in them.
    for doc in docs:
        if doc.kind in NEGATIVE_KINDS:
            assert doc.truth == {}
            assert detect_document_markings(doc.text) == {}, doc.text
