"""The gateway's Guard: local decisions on prompt text under a policy file or a streamed one."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.usage.v1 import usage_event_pb2 as usage_pb
from civicmeter.gateway import Guard, RequestFacts
from civicmeter.policy.compiled import budget_message, compile_policy
from civicmeter.policy.decision import BudgetState, Spent
from civicmeter.policy.organization import load_policies
from tests.gateway.test_pii import RRN, hyphenated

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "policies.yaml"
WORKDAY = datetime(2026, 12, 2, 10, 30, tzinfo=ZoneInfo("Asia/Seoul"))
CHATGPT = RequestFacts(
    department="digital-policy", user_id="u_1", provider="openai", service="chatgpt",
    account_kind="organizational",
)  # fmt: skip
MEMO = """[대외비]
2025년 조직개편 추진계획(안)
정보공개정책과-1234
"""


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard.from_policy_file(SHIPPED, "seoul")


def test_a_registration_number_is_masked_in_place(guard: Guard) -> None:
    prompt = f"민원인 주민등록번호 {hyphenated(RRN)} 확인 부탁드립니다."
    verdict = guard.check(prompt, CHATGPT, WORKDAY)
    assert verdict.outcome == "REDACT"
    assert verdict.rule_ids == ("pii.kr_rrn",)
    assert verdict.prompt == "민원인 주민등록번호 900101-1****** 확인 부탁드립니다."
    assert verdict.pii_findings == {"kr_rrn": 1}
    assert hyphenated(RRN) not in repr(verdict) and "민원인" not in repr(verdict)


def test_deepseek_is_denied_and_nothing_is_sendable(guard: Guard) -> None:
    request = RequestFacts(department="welfare", provider="deepseek", service="deepseek-chat")
    verdict = guard.check("보도자료 요약해줘", request, WORKDAY)
    assert verdict.outcome == "DENY"
    assert verdict.rule_ids == ("banned_provider",)
    assert verdict.prompt is None


def test_a_confidential_document_is_blocked(guard: Guard) -> None:
    verdict = guard.check(MEMO, CHATGPT, WORKDAY)
    assert verdict.outcome == "DENY"
    assert "document.confidential" in verdict.rule_ids
    assert verdict.document_markings["confidential"] == 1
    assert "대외비" in verdict.reason_ko


def test_an_email_address_warns_and_the_prompt_goes_unchanged(guard: Guard) -> None:
    prompt = "회신은 kim.minji@seoul.go.kr 로 부탁드립니다."
    verdict = guard.check(prompt, CHATGPT, WORKDAY)
    assert verdict.outcome == "ALLOW_WITH_WARNING"
    assert verdict.prompt == prompt
    plain = guard.check("오늘 회의 안건을 정리해줘", CHATGPT, WORKDAY)
    assert (plain.outcome, plain.prompt) == ("ALLOW", "오늘 회의 안건을 정리해줘")
    assert not plain.stale and plain.policy_version == "2024-09"


def _streamed(department_spent: str = "0") -> pb.WatchPolicyResponse:
    message = pb.WatchPolicyResponse(policy=compile_policy(load_policies(SHIPPED), "seoul"))
    state = BudgetState(
        datetime.now(UTC),
        departments={"digital-policy": Spent(month_krw=Decimal(department_spent))},
    )
    message.budget_state.CopyFrom(budget_message(state))
    return message


def test_a_streamed_policy_and_budget_state_decide(tmp_path: Path) -> None:
    guard = Guard("seoul")
    assert guard.stale and guard.staleness_seconds is None
    guard.apply(_streamed("1500000"))
    assert guard.policy_version == "2024-09"
    assert not guard.stale
    now = datetime.now(UTC)
    denied = guard.check("회의록 요약", CHATGPT, now)
    assert denied.outcome == "DENY"
    assert "budget.department.month" in denied.rule_ids
    assert "1,500,000" in denied.reason_en
    guard.apply(_streamed("10"))
    assert guard.check("회의록 요약", CHATGPT, now).outcome != "DENY"


def test_without_any_policy_the_built_in_defaults_decide_and_banned_stays_banned() -> None:
    guard = Guard("seoul")
    verdict = guard.check(f"주민번호 {hyphenated(RRN)}", CHATGPT, WORKDAY)
    assert (verdict.outcome, verdict.stale, verdict.policy_version) == ("REDACT", True, "built-in")
    banned = guard.check("hi", RequestFacts(provider="deepseek"), WORKDAY)
    assert banned.outcome == "DENY"


def test_a_stale_policy_can_fail_closed() -> None:
    guard = Guard("seoul", when_stale="deny", stale_after_seconds=0.05)
    guard.apply(_streamed())
    assert guard.check("안녕", CHATGPT, WORKDAY).outcome == "ALLOW"
    deadline = time.monotonic() + 5
    while not guard.stale and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = guard.check("안녕", CHATGPT, WORKDAY)
    assert refused.outcome == "DENY"
    assert refused.rule_ids == ("policy.stale",)
    assert refused.staleness_seconds is not None and refused.staleness_seconds > 0.05
    lenient = Guard("seoul", stale_after_seconds=0.0)
    lenient.apply(_streamed())
    kept = lenient.check("안녕", CHATGPT, WORKDAY)
    assert (kept.outcome, kept.stale) == ("ALLOW", True)


def test_the_last_policy_survives_a_restart_in_the_cache_file(tmp_path: Path) -> None:
    cache = tmp_path / "policy.bin"
    Guard("seoul", cache_file=cache).apply(_streamed())
    past = time.time() - 120
    os.utime(cache, (past, past))
    restarted = Guard("", cache_file=cache)
    assert restarted.policy_version == "2024-09"
    age = restarted.staleness_seconds
    assert age is not None and 119 < age < 200
    verdict = restarted.check(MEMO, CHATGPT, WORKDAY)
    assert verdict.outcome == "DENY" and verdict.stale


async def test_an_unreachable_service_leaves_the_last_policy_deciding() -> None:
    guard = Guard.from_policy_file(SHIPPED, "seoul")
    watching = asyncio.create_task(guard.watch("127.0.0.1:1", "cmk_unused"))
    await asyncio.sleep(0.3)
    verdict = guard.check(MEMO, CHATGPT, WORKDAY)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert verdict.outcome == "DENY" and verdict.policy_version == "2024-09"


def test_when_stale_is_checked() -> None:
    with pytest.raises(ValueError, match="when_stale"):
        Guard("seoul", when_stale="maybe")  # type: ignore[arg-type]


def test_only_the_types_the_policy_redacts_are_masked(guard: Guard) -> None:
    prompt = f"주민등록번호 {hyphenated(RRN)}, 회신 kim.minji@seoul.go.kr"
    verdict = guard.check(prompt, CHATGPT, WORKDAY)
    assert verdict.outcome == "REDACT"
    assert set(verdict.rule_ids) == {"pii.kr_rrn", "pii.email"}
    assert verdict.prompt == "주민등록번호 900101-1******, 회신 kim.minji@seoul.go.kr"
    assert verdict.pii_findings == {"kr_rrn": 1, "email": 1}


def test_a_verdict_goes_into_the_usage_event_as_counts_and_rule_ids(guard: Guard) -> None:
    prompt = f"주민등록번호 {hyphenated(RRN)}"
    event = usage_pb.UsageEvent(event_id="e1")
    guard.check(prompt, CHATGPT, WORKDAY).annotate(event)
    assert event.decision == usage_pb.DECISION_REDACT
    assert list(event.decision_rule_ids) == ["pii.kr_rrn"]
    assert dict(event.risk.pii_findings) == {"kr_rrn": 1}
    assert RRN[7:] not in event.SerializeToString().decode("utf-8", "replace")
    banned = usage_pb.UsageEvent(event_id="e2")
    guard.check("hi", RequestFacts(provider="deepseek"), WORKDAY).annotate(banned)
    assert banned.decision == usage_pb.DECISION_DENY
    assert banned.usage.requests == 1  # metered as an attempt, rated 0
