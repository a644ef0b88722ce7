"""A labelled, synthetic corpus of prompts for the public-document marking detector.

    docs = generate(5000, seed=20240315)
    docs[0].text     # "다음 공문을 요약해 주세요.\n대외비\n..."
    docs[0].truth    # {"confidential": 1}

Deterministic for a seed. Every document is a prompt a civil servant might send to an AI
service: a pasted official document (공문, 보고서, 계획안) with its markings, labels, document
numbers, approval block and declarations of personal information written the ways offices
write them; an English memo; a pasted metadata table; or a hard negative that uses the same
words without being a marked document: password notices (비밀번호), security-training
announcements (보안 교육) that talk about 대외비 and 비밀, news articles that mention a 비공개
회의 or a leaked 대외비 문건, public press releases (보도자료) with their contact block and
effective dates, public schedules (간부회의(비공개)), prose that uses 결재, 협조, 검토 and 전결
as words, and advice about personal information. Official documents carry such prose too.

Everything here is synthetic: the sentences are written from templates and the shares (how
often a document carries a marking, in which shape) are choices made in this file, not
measurements of real prompts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

DEFAULT_SEED = 20240315

# Shares of the kinds of documents (the rest are hard negatives).
OFFICIAL_SHARE = 0.36
MEMO_SHARE = 0.08
TABLE_SHARE = 0.06
NEGATIVE_KINDS = ("password", "training", "news", "press", "schedule", "prose", "advice")


@dataclass(frozen=True)
class Document:
    text: str
    # How many markings of each class the text holds; classes it does not hold are absent.
    truth: Mapping[str, int]
    kind: str  # "official", "memo", "table", or the kind of hard negative
    language: str = "ko"  # or "en"


def generate(count: int, seed: int = DEFAULT_SEED) -> list[Document]:
    """`count` documents, the same ones for the same seed."""
    author = _Author(random.Random(seed))
    return [author.document() for _ in range(count)]


# --- words ----------------------------------------------------------------------------------

_SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
_SYLLABLES = "민서지현수영준우진하은도윤예성태희경재혜동"
_OFFICES = (
    "정보공개정책과",
    "기획예산과",
    "자치행정과",
    "복지정책과",
    "도시계획과",
    "홍보담당관",
    "감사관",
    "민원실",
    "정보화담당관",
    "교통정책과",
    "재난안전대책본부",
    "보건소",
    "인사팀",
    "문화관광국",
    "시립도서관",
    "소방재난본부",
    "평생교육센터",
    "지방세심의위원회",
    "새빛초등학교",
    "환경사업소",
)
_RANKS = ("주무관", "행정주사", "사무관", "행정사무관", "서기관", "팀장", "과장", "국장")
_TITLES = (
    "2025년 조직개편 추진계획",
    "청사 보안점검 결과 보고",
    "지방선거 대비 공무원 복무관리 계획",
    "정보시스템 취약점 진단 결과",
    "시 산하기관 경영평가 결과",
    "재난 대응 훈련 결과 보고",
    "민원 처리 실태 감사 결과",
    "예산 편성 기본방향",
    "도시재생 뉴딜사업 후보지 검토",
    "공공요금 조정 검토안",
)
_TITLES_EN = (
    "Reorganisation plan for 2025",
    "Results of the building security inspection",
    "Vulnerability assessment of the permit system",
    "Draft budget guidelines",
)
_TASKS = (
    "다음 공문을 요약해 주세요.",
    "아래 보고서의 핵심 내용을 세 줄로 정리해 주세요.",
    "다음 문서를 쉬운 말로 다시 써 주세요.",
    "아래 계획안을 검토하고 보완할 점을 알려 주세요.",
    "다음 문서를 영어로 번역해 주세요.",
    "아래 내용으로 보고서 초안을 다듬어 주세요.",
)
_TASKS_EN = (
    "Summarise the following memo.",
    "Translate this memo into Korean.",
    "Rewrite the memo below in plain language.",
)
_BODY = (
    "1. 추진 배경 및 목적을 아래와 같이 보고드립니다.",
    "2. 주요 내용: 부서별 업무 분장을 재조정하고 인력을 재배치함.",
    "가. 기존 3개 팀을 2개 팀으로 통합하여 운영 효율을 높임.",
    "나. 현장 대응 인력을 보강하고 야간 당직 체계를 개선함.",
    "3. 향후 계획: 관계 부서 의견 수렴 후 최종안을 확정할 예정임.",
    "점검 결과 출입 통제 절차 일부가 지켜지지 않은 것으로 확인되었습니다.",
    "이번 계획은 관계 부서의 협조를 받아 추진할 예정입니다.",
    "과장님 결재를 받아 시행하겠습니다.",
    "검토 결과 추가 예산 편성이 필요한 것으로 판단됩니다.",
    "세부 일정은 관계 기관과 협의하여 결정하겠습니다.",
    "전결 규정에 따라 국장 전결로 처리합니다.",
    "붙임 자료를 참고하여 검토 후 결재 바랍니다.",
    "각 부서의 적극적인 협조 부탁드립니다.",
    "기안문 작성 시 맞춤법을 확인해 주시기 바랍니다.",
    "위 사항을 검토하여 10월 말까지 회신해 주시기 바랍니다.",
    "감사 결과 지적사항은 다음 달까지 조치를 완료해야 합니다.",
    "예산 집행 실적은 분기별로 보고해 주시기 바랍니다.",
    "개인정보가 포함된 부분은 외부 제출 시 삭제해야 합니다.",
)
_BODY_EN = (
    "The division reviewed the proposal and recommends phased implementation.",
    "Staff will be reassigned to the new team from next quarter.",
    "The plan was approved by the council on 3 March.",
    "Please keep this confidential until the announcement.",
    "Comments from the Budget Division are attached.",
    "The vulnerability scan found two issues, both fixed.",
)

# Sentences that name markings, approval and personal information without being any of them.
_MENTIONS = (
    "위원회는 이날 오후 비공개 회의를 열고 후속 대책을 논의했다.",
    "회의는 비공개로 진행됐으며 결과는 다음 주 발표될 예정이다.",
    "대외비 문서는 출력 후 반드시 파쇄해야 합니다.",
    "보안등급 분류 기준(비밀, 대외비, 일반)을 숙지해 주시기 바랍니다.",
    "업무포털 비밀번호를 90일마다 변경해 주시기 바랍니다.",
    "개인정보 포함 여부를 확인한 뒤 제출해 주세요.",
    "결재 라인: 담당 → 팀장 → 과장",
    "공개 여부는 비공개로 결정됐다.",
    "비공개 대상 정보는 정보공개심의회에서 다시 검토합니다.",
    "취급주의 표시가 된 자료는 별도로 보관합니다.",
)
# Markings per class: Korean words and English words.
_MARKING_WORDS: dict[str, tuple[str, ...]] = {
    "classified": ("비밀",),
    "confidential": ("대외비",),
    "internal": ("취급주의", "내부용"),
    "nondisclosure": ("비공개", "공개제한", "부분공개", "열람제한"),
}
_GRADES = ("Ⅰ급", "Ⅱ급", "Ⅲ급", "II급", "III급", "2급", "3급", "Ⅱ급 ", "Ⅲ급 ", "3급 ")
_ENGLISH_MARKINGS: dict[str, tuple[str, ...]] = {
    "classified": ("TOP SECRET", "SECRET"),
    "confidential": ("CONFIDENTIAL", "STRICTLY CONFIDENTIAL", "Confidential", "RESTRICTED"),
    "internal": ("FOUO", "FOR OFFICIAL USE ONLY", "INTERNAL USE ONLY", "For Internal Use Only"),
    "nondisclosure": ("NOT FOR PUBLIC RELEASE", "Not for Public Disclosure"),
}
_LABELS = ("보안등급", "보안 등급", "문서등급", "비밀등급", "보안분류")
_DISCLOSURE_LABELS = ("공개구분", "공개여부", "공개 여부", "정보공개 여부", "열람범위")
_DISCLOSURE_REASONS = (
    "",
    "(5호)",
    "(제9조 제1항 제5호)",
    "(「공공기관의 정보공개에 관한 법률」 제9조 제1항 제6호)",
)


class _Author:
    """Writes documents, drawing every choice from one seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    # --- small draws ----------------------------------------------------------------------

    def pick(self, options: Sequence[str], weights: Sequence[float] | None = None) -> str:
        return self.r.choices(options, weights)[0]

    def name(self) -> str:
        return self.r.choice(_SURNAMES) + self.r.choice(_SYLLABLES) + self.r.choice(_SYLLABLES)

    def day(self) -> date:
        return date(2019, 1, 1) + timedelta(days=self.r.randrange(8 * 365))

    def date_text(self) -> str:
        d = self.day()
        return self.pick(
            (f"{d.year}. {d.month}. {d.day}.", f"{d:%Y.%m.%d.}", f"{d:%Y-%m-%d}", f"{d:%Y.%m.%d}")
        )

    def office_number(self) -> str:
        serial = self.r.randrange(1, 100_000 if self.r.random() < 0.7 else 1_000)
        return f"{self.r.choice(_OFFICES)}-{serial}" + ("호" if self.r.random() < 0.1 else "")

    # --- markings -------------------------------------------------------------------------

    def marking_word(self, cls: str) -> str:
        word = self.r.choice(_MARKING_WORDS[cls])
        if cls == "classified" and self.r.random() < 0.7:
            return self.r.choice(_GRADES) + word
        return word

    def marking_line(self, cls: str, title: str) -> tuple[str, bool]:
        """A marking of `cls` in one of its shapes, and whether it replaced the title."""
        word = self.marking_word(cls)
        shapes = ["alone", "bracket", "decorated", "label", "declared"]
        if cls != "nondisclosure":
            shapes.append("title")
        shape = self.r.choice(shapes)
        if shape == "alone":
            return self.pick((word, f"  {word}", f"{word}  ")), False
        if shape == "bracket":
            left, right = self.r.choice((("[", "]"), ("【", "】"), ("<", ">"), ("〈", "〉")))
            inner = self.pick((word, f" {word} "))
            return f"{left}{inner}{right}" + self.pick(("", f" {title}")), False
        if shape == "decorated":
            mark = self.r.choice(("-", "=", "*", "■", "//"))
            return f"{mark} {word} {mark}", False
        if shape == "label":
            label = self.r.choice(_DISCLOSURE_LABELS if cls == "nondisclosure" else _LABELS)
            if label == "비밀등급" and word not in ("비밀", "대외비") and self.r.random() < 0.5:
                word = word.removesuffix("비밀").strip()  # 비밀등급: Ⅱ급
            sep = self.pick((": ", " : ", " | ", "\t", "："))
            reason = self.r.choice(_DISCLOSURE_REASONS) if cls == "nondisclosure" else ""
            return f"{label}{sep}{word}{reason}", False
        if shape == "declared":
            subject = self.pick(("본 문서는", "이 문서는", "본 자료는", "이 보고서는"))
            ending = self.pick(("입니다.", "이므로 외부 유출을 금합니다.", " 문서입니다."))
            return f"※ {subject} {word}{ending}", False
        return f"{title}({word})", True

    def english_marking(self, cls: str) -> str:
        word = self.r.choice(_ENGLISH_MARKINGS[cls])
        shape = self.pick(("alone", "bracket", "label", "declared", "portion"))
        if shape == "bracket":
            return f"[{word}]"
        if shape == "label":
            label = self.pick(("Classification", "Security classification", "Handling"))
            return f"{label}: {word}"
        if shape == "declared" and cls in ("confidential", "internal"):
            what = "confidential" if cls == "confidential" else "for internal use only"
            return f"This {self.pick(('document', 'memo', 'report'))} is {what}."
        if shape == "portion" and cls == "internal":
            return f"(U//FOUO) {self.r.choice(_BODY_EN)}"
        return word

    # --- blocks ---------------------------------------------------------------------------

    def approval_block(self) -> str:
        """An approval block in one of the ways documents print or paste it."""
        dept = self.r.choice(_OFFICES)
        head = dept[:-1] + "장" if dept.endswith(("과", "국", "실")) else "과장"
        drafter, reviewer = self.name(), self.name()
        d = self.day()
        date_short = self.pick((f"{d:%m/%d}", f"{d.year}. {d.month}. {d.day}."))
        form = self.pick(("line", "lines", "grid", "grid_names", "columns", "names_first"))
        if form == "names_first":
            return (
                f"기안자 {drafter} {self.r.choice(_RANKS[:3])}"
                f"   검토자 {reviewer} {self.r.choice(_RANKS[2:6])}"
            )
        if form == "line":
            drafter_rank, reviewer_rank = self.r.choice(_RANKS[:3]), self.r.choice(_RANKS[2:6])
            return (
                f"기안자 {drafter_rank} {drafter}   검토자 {reviewer_rank} {reviewer}"
                f"   결재권자 {head} {self.pick(('전결 ', ''))}{date_short}"
            )
        if form == "lines":
            lines = [
                f"기안자 {self.r.choice(_RANKS[:3])} {drafter}",
                f"검토자 {self.r.choice(_RANKS[2:6])} {reviewer}",
                f"결재권자 {head} 전결 {date_short}",
            ]
            if self.r.random() < 0.5:
                lines.append(f"협조자 {self.r.choice(_RANKS[:3])} {self.name()}")
            return "\n".join(lines)
        if form == "grid":
            sep = self.pick((" | ", "\t", "  "))
            ranks = sep.join(self.r.sample(("담당", "주무관", "팀장", "과장", "국장"), 3))
            return f"{self.pick(('결재', '결 재'))}{sep}{ranks}"
        if form == "grid_names":
            sep = self.pick((" | ", "\t"))
            header = sep.join(("결재", "담당", "팀장", "과장"))
            return f"{header}\n{sep}{drafter}{sep}{reviewer}{sep}전결 {date_short}"
        return f"기안  {drafter}\n검토  {reviewer}\n결재  {head} {date_short}"

    def enforcement_line(self) -> tuple[str, int]:
        """A 시행/접수 line and how many document numbers it holds."""
        form = self.pick(("office", "office_both", "numbered", "office_only_received"))
        if form == "office":
            return f"시행 {self.office_number()} ({self.date_text()})     접수", 1
        if form == "office_both":
            return (
                f"시행 {self.office_number()} ({self.date_text()})"
                f"    접수 {self.office_number()} ({self.date_text()})",
                2,
            )
        if form == "numbered":
            label, year = self.pick(("시행", "접수")), self.day().year
            return f"{label} 제{year}-{self.r.randrange(1, 5000)}호 ({self.date_text()})", 1
        serial = self.r.randrange(1, 999_999)
        return f"접수번호 {self.day().year}-{serial:06d} ({self.date_text()})", 1

    def personal_declaration(self) -> str:
        return self.pick(
            (
                "[개인정보 포함]",
                "【개인정보 포함 문서】",
                "개인정보 포함",
                "개인정보 포함(주민등록번호, 연락처)",
                "개인정보 포함 여부"
                + self.pick((": ", " : ", " | "))
                + self.pick(("포함", "있음", "○", "예")),
                "※ 본 문서는 개인정보를 포함하고 있으므로 취급에 주의하시기 바랍니다.",
                "※ 이 자료에는 개인정보가 포함되어 있습니다.",
                "첨부한 명단에는 민원인의 개인정보가 포함되어 있습니다.",
                "주민등록번호 수집·이용 동의서",
                "■ 주민등록번호 수집 근거: 「주민등록법 시행령」 제47조",
                "3. 주민등록번호 수집 목적: 본인 확인",
                "□ 고유식별정보(주민등록번호) 수집 동의  □ 동의함  □ 동의하지 않음",
            )
        )

    # --- documents ------------------------------------------------------------------------

    def official(self) -> Document:
        truth: Counter[str] = Counter()
        title = self.r.choice(_TITLES)
        lines = [self.r.choice(_TASKS)]
        header: str | None = None
        title_line = f"제목 {title}"
        if self.r.random() < 0.6:
            cls = self.pick(tuple(_MARKING_WORDS), (0.25, 0.35, 0.2, 0.2))
            header, replaced = self.marking_line(cls, title)
            truth[cls] += 1
            if replaced:
                title_line, header = f"제목 {header}", None
            if self.r.random() < 0.3:  # the same marking at the foot of the page
                footer, replaced = self.marking_line(cls, title)
                lines_footer = footer if not replaced else f"[{self.marking_word(cls)}]"
                truth[cls] += 1
            else:
                lines_footer = None
        else:
            lines_footer = None
        if header is not None:
            lines.append(header)
        lines += [f"수신 {self.pick(('내부결재', '수신자 참조', '각 부서장'))}", title_line]
        if self.r.random() < 0.35:
            lines.append(f"1. 관련: {self.office_number()}({self.date_text()})")
            truth["document_number"] += 1
        if self.r.random() < 0.25:
            label = self.r.choice(_DISCLOSURE_LABELS)
            word = self.r.choice(_MARKING_WORDS["nondisclosure"])
            lines.append(f"{label}: {word}{self.r.choice(_DISCLOSURE_REASONS)}")
            truth["nondisclosure"] += 1
        elif self.r.random() < 0.2:
            lines.append(f"{self.r.choice(_DISCLOSURE_LABELS)}: 공개")  # public: no marking
        lines += self.r.sample(_BODY, self.r.randrange(3, 10))
        if self.r.random() < 0.3:  # prose that names markings without being one
            lines.insert(self.r.randrange(3, len(lines)), self.r.choice(_MENTIONS))
        if self.r.random() < 0.2:
            lines.insert(self.r.randrange(2, len(lines) + 1), self.personal_declaration())
            truth["personal_data"] += 1
        lines.append(self.pick(("끝.", "붙임  1. 세부 계획 1부.  끝.")))
        if self.r.random() < 0.5:
            lines.append("")
            lines.append(self.approval_block())
            truth["approval_block"] += 1
        if self.r.random() < 0.5:
            line, numbers = self.enforcement_line()
            lines.append(line)
            truth["document_number"] += numbers
            lines.append(f"우 {self.r.randrange(10000, 63000)} 세종특별자치시 도움6로 42")
        if lines_footer is not None:
            lines.append(lines_footer)
        return Document("\n".join(lines), dict(truth), "official")

    def memo(self) -> Document:
        truth: Counter[str] = Counter()
        lines = [self.r.choice(_TASKS_EN)]
        if self.r.random() < 0.7:
            cls = self.r.choice(tuple(_ENGLISH_MARKINGS))
            lines.append(self.english_marking(cls))
            truth[cls] += 1
        lines += [
            f"MEMORANDUM: {self.r.choice(_TITLES_EN)}",
            f"Date: {self.day():%d %B %Y}",
            *self.r.sample(_BODY_EN, 3),
        ]
        if self.r.random() < 0.15:
            lines.append(self.pick(("This document contains personal data.", "[CONTAINS PII]")))
            truth["personal_data"] += 1
        if self.r.random() < 0.4:
            lines.append("")
            lines.append(f"{self.pick(('Drafted', 'Prepared'))} by: {self.name()}, Officer")
            if self.r.random() < 0.5:
                lines.append(f"{self.pick(('Reviewed', 'Checked'))} by: {self.name()}, Lead")
            lines.append(f"Approved by: {self.name()}, Director")
            truth["approval_block"] += 1
        return Document("\n".join(lines), dict(truth), "memo", "en")

    def table(self) -> Document:
        truth: Counter[str] = Counter()
        sep = self.pick((" | ", "\t", ": "))
        rows = [self.pick(("다음 표의 문서 정보를 정리해 주세요.", "아래 문서 목록을 요약해 줘."))]
        rows.append(f"문서번호{sep}{self.office_number()}")
        truth["document_number"] += 1
        rows.append(f"생산일자{sep}{self.date_text()}")
        if self.r.random() < 0.7:
            rows.append(f"보안등급{sep}{self.pick(('대외비', '일반', 'Ⅲ급 비밀'))}")
            last = rows[-1].rsplit(sep, 1)[1]
            if last != "일반":
                truth["confidential" if last == "대외비" else "classified"] += 1
        if self.r.random() < 0.7:
            word = self.pick(("공개", "부분공개", "비공개", "공개제한"))
            rows.append(f"공개구분{sep}{word}{self.r.choice(_DISCLOSURE_REASONS)}")
            if word != "공개":
                truth["nondisclosure"] += 1
        if self.r.random() < 0.4:
            rows.append(f"개인정보 포함 여부{sep.strip() or ':'} {self.pick(('포함', '있음'))}")
            truth["personal_data"] += 1
        return Document("\n".join(rows), dict(truth), "table")

    def negative(self) -> Document:
        kind = self.r.choice(NEGATIVE_KINDS)
        lines: list[str] = []
        if kind == "password":
            lines = [
                self.pick(("[비밀번호 변경 안내]", "비밀번호 변경 안내", "【비밀번호 재설정】")),
                "업무포털 비밀번호를 90일마다 변경해 주시기 바랍니다.",
                "비밀번호: 영문, 숫자, 특수문자를 조합하여 9자리 이상",
                "초기 비밀번호는 생년월일 6자리이며 최초 로그인 시 변경해야 합니다.",
                self.pick(("비밀번호를 타인과 공유하지 마십시오.", "비밀번호 분실 시 문의 바람.")),
            ]
        elif kind == "training":
            lines = [
                self.pick(("[보안 교육 안내]", "2025년 상반기 정보보안 교육 실시 알림")),
                f"일시: {self.date_text()} 14:00 / 장소: 대회의실",
                "교육 내용: 비밀 및 대외비 문서 관리 요령, 비밀번호 관리, 개인정보 보호",
                "보안등급 분류 기준(비밀, 대외비, 일반)을 숙지해 주시기 바랍니다.",
                "보안등급: 비밀, 대외비, 일반",
                "대외비 문서는 출력 후 반드시 파쇄해야 합니다.",
                "개인정보가 포함된 문서는 암호화하여 보관해야 합니다.",
                "보안 교육 이수는 전 직원 필수입니다.",
            ]
            lines = [lines[0], *self.r.sample(lines[1:], 4)]
        elif kind == "news":
            lines = [
                self.pick(("다음 기사를 요약해 주세요.", "아래 기사의 논점을 정리해 주세요.")),
                "위원회는 이날 오후 비공개 회의를 열고 후속 대책을 논의했다.",
                "회의는 비공개로 진행됐으며 결과는 다음 주 발표될 예정이다.",
                "야당은 정부가 대외비 문건을 근거로 정책을 결정했다고 비판했다.",
                "군 당국은 '2급 비밀' 문서가 유출된 경위를 조사하고 있다.",
                "이 문서는 대외비로 분류돼 있었던 것으로 알려졌다.",
                "공개 여부는 비공개로 결정됐다.",
                "The report was marked CONFIDENTIAL by the ministry, officials said.",
                "결재 과정에서 부서 간 협조가 부족했다는 지적도 나왔다.",
            ]
            lines = [lines[0], *self.r.sample(lines[1:], 4)]
        elif kind == "press":
            d = self.day()
            lines = [
                "다음 보도자료를 쉬운 말로 바꿔 주세요.",
                "보도자료",
                f"보도시점 {d.year}. {d.month}. {d.day}. 06:00  배포 {d.year}. {d.month}. {d.day}.",
                "개인정보 보호 강화를 위한 주민등록번호 수집 법정주의 시행",
                "앞으로 법령 근거 없는 주민등록번호 수집이 금지된다.",
                f"시행일: {self.date_text()}",
                "정부는 이날 비공개 간담회에서 제도 개선 방안을 논의했다고 밝혔다.",
                f"담당 부서 {self.r.choice(_OFFICES)}  책임자 과장 {self.name()} (044-205-1234)",
                f"담당자 사무관 {self.name()} (044-205-1235)",
            ]
        elif kind == "schedule":
            lines = [
                "다음 주간 일정을 표로 만들어 주세요.",
                f"{self.r.randrange(8, 11)}:00 간부회의(비공개)",
                "14:00 시정조정위원회(비공개)",
                "16:00 시민 간담회(공개)",
                "시청역 3번 출구 앞 집결, 버스 시청-3번 정류장",
                f"서울특별시 공고 제{self.day().year}-{self.r.randrange(1, 2000)}호 참고",
            ]
        elif kind == "prose":
            lines = [
                self.pick(("다음 내용을 정리해 주세요.", "아래 메모를 공문체로 바꿔 주세요.")),
                *self.r.sample(_BODY, 4),
                "결재 라인: 담당 → 팀장 → 과장",
                "기안 검토 결재 순으로 진행합니다.",
                "코로나19-2차 접종 안내 자료와 교육청-2025학년도 계획을 참고하세요.",
                f"민원 접수 기간은 {self.date_text()}부터 2주간입니다.",
            ]
        else:  # advice about personal information
            lines = [
                "다음 안내문을 다듬어 주세요.",
                "개인정보가 포함된 부분은 답변서에서 제외해야 합니다.",
                "개인정보 포함 여부를 확인한 뒤 제출해 주세요.",
                "주민등록번호 수집을 최소화하는 방향으로 서식을 정비합니다.",
                "개인정보가 포함된 문서는 파기해야 합니다.",
            ]
        return Document("\n".join(lines), {}, kind)

    def document(self) -> Document:
        roll = self.r.random()
        if roll < OFFICIAL_SHARE:
            return self.official()
        if roll < OFFICIAL_SHARE + MEMO_SHARE:
            return self.memo()
        if roll < OFFICIAL_SHARE + MEMO_SHARE + TABLE_SHARE:
            return self.table()
        return self.negative()
