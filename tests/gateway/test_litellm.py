"""The LiteLLM integration against the real `litellm` package, offline (`mock_response`), and
the real ingest service over the real broker: N calls -> N events with LiteLLM's tokens, the
user pseudonymised, a failed call metered once; the guardrail denies DeepSeek and masks a
resident registration number before the call; and LiteLLM's own proxy, configured by
deploy/litellm/config.yaml alone, does all of it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
# LiteLLM's modules warn as they load (pydantic on its TypedDicts): theirs, not civicmeter's.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import litellm
    from litellm.caching.dual_cache import DualCache
    from litellm.exceptions import GuardrailRaisedException
    from litellm.proxy._types import UserAPIKeyAuth

    from civicmeter.gateway.litellm import CivicmeterGuardrail, CivicmeterLogger

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.gateway import Guard, UsageEmitter, pseudonymise_user
from tests.ingest.test_auth import KEYS, SEOUL_TOKEN, Ingest, running_ingest
from tests.ingest.test_cloudevents import published
from tests.scripted_http import scripted_server

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm.*"),
]

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "config" / "policies.yaml"
PROXY_CONFIG = REPO / "deploy" / "litellm" / "config.yaml"
HMAC_KEY = b"seoul-pseudonym-key-0123456789abcdef"


@contextmanager
def litellm_callbacks(*callbacks: Any) -> Iterator[None]:
    """Only these callbacks for the block. LiteLLM copies `litellm.callbacks` into lists of its
    own and skips a second logger of the same class, so a logger left from an earlier test
    would take the calls: every list is reset before and after."""
    litellm.logging_callback_manager._reset_all_callbacks()  # type: ignore[no-untyped-call]
    litellm.callbacks = list(callbacks)
    try:
        yield
    finally:
        litellm.logging_callback_manager._reset_all_callbacks()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def ingest(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ingest]:
    keys = Path(tmp_path_factory.mktemp("keys")) / "gateway-keys.yaml"
    keys.write_text(yaml.safe_dump(KEYS))
    async with running_ingest(kafka_bootstrap, keys) as running:
        yield running


async def test_each_call_is_one_event_with_its_tokens(ingest: Ingest) -> None:
    emitter = UsageEmitter(f"http://127.0.0.1:{ingest.settings.http_port}", token=SEOUL_TOKEN)
    logger = CivicmeterLogger(
        emitter, hmac_key=HMAC_KEY, organization_id="seoul", gateway_id="gw-seoul-1"
    )
    with litellm_callbacks(logger):
        responses = [
            await litellm.acompletion(
                model="openai/gpt-4o",
                messages=[{"role": "user", "content": f"question {n}" * (n + 1)}],
                mock_response="an answer " * (n + 1),
                user="kim.minji",
                metadata={"civicmeter_department_id": "welfare"},
            )
            for n in range(4)
        ]
        failed_id = f"failed-{uuid.uuid4()}"
        with pytest.raises(litellm.exceptions.RateLimitError):
            await litellm.acompletion(
                model="openai/gpt-4o",
                messages=[{"role": "user", "content": "one more"}],
                mock_response=litellm.exceptions.RateLimitError(
                    "slow down", llm_provider="openai", model="gpt-4o"
                ),
                user="kim.minji",
                metadata={"civicmeter_department_id": "welfare"},
                num_retries=0,
                litellm_call_id=failed_id,
            )
        await asyncio.sleep(1.0)  # LiteLLM logs in background tasks
        await emitter.close()
    # The call id is the event id.
    ids = {r._hidden_params["litellm_call_id"]: r for r in responses}
    events = await published(ingest, set(ids) | {failed_id})
    assert len(events) == 5
    failed = events.pop(failed_id)
    assert failed.usage == pb.Usage(requests=1)  # failed, having consumed nothing
    for call_id, response in ids.items():
        event = events[call_id]
        assert event.usage.input_tokens == response.usage.prompt_tokens > 0
        assert event.usage.output_tokens == response.usage.completion_tokens > 0
        assert (event.provider_name, event.service_id, event.request_model) == (
            "openai", "openai-api", "gpt-4o")  # fmt: skip
        assert (event.organization_id, event.department_id) == ("seoul", "welfare")
        assert event.user_id == pseudonymise_user(HMAC_KEY, "kim.minji")
        assert event.operation_name == "chat"


def test_a_failed_call_is_metered_as_one_request() -> None:
    logger = CivicmeterLogger(
        UsageEmitter("http://unused"), hmac_key=HMAC_KEY, organization_id="seoul"
    )
    payload: dict[str, Any] = {
        "id": f"call-{uuid.uuid4()}", "call_type": "acompletion", "status": "failure",
        "custom_llm_provider": "anthropic", "model": "claude-3-5-sonnet", "end_user": "lee",
        "prompt_tokens": 0, "completion_tokens": 0, "startTime": 1_780_000_000.0,
        "metadata": {"user_api_key_team_alias": "transport"},
    }  # fmt: skip
    event = logger.event(payload, {})
    assert event.usage.requests == 1 and event.usage.input_tokens == 0
    assert (event.department_id, event.service_id) == ("transport", "anthropic-api")


def test_the_configured_organisation_wins_over_the_callers_metadata() -> None:
    payload: dict[str, Any] = {
        "id": "call-2", "call_type": "completion", "custom_llm_provider": "openai",
        "model": "gpt-4o", "end_user": "lee", "prompt_tokens": 10, "completion_tokens": 5,
        "metadata": {"civicmeter_organization_id": "busan", "civicmeter_department_id": "welfare"},
    }  # fmt: skip
    configured = CivicmeterLogger(
        UsageEmitter("http://unused"), hmac_key=HMAC_KEY, organization_id="seoul"
    )
    assert configured.event(payload, {}).organization_id == "seoul"
    unconfigured = CivicmeterLogger(UsageEmitter("http://unused"), hmac_key=HMAC_KEY)
    assert unconfigured.event(payload, {}).organization_id == "busan"


def test_cached_and_reasoning_tokens_are_taken_out_of_the_totals() -> None:
    logger = CivicmeterLogger(
        UsageEmitter("http://unused"), hmac_key=HMAC_KEY, organization_id="seoul"
    )
    payload: dict[str, Any] = {
        "id": "call-1", "call_type": "completion", "custom_llm_provider": "openai",
        "model": "o3-mini", "end_user": "lee", "prompt_tokens": 1000, "completion_tokens": 500,
        "metadata": {"civicmeter_department_id": "welfare", "usage_object": {
            "prompt_tokens_details": {"cached_tokens": 300},
            "completion_tokens_details": {"reasoning_tokens": 200}}},
    }  # fmt: skip
    usage = logger.event(payload, {}).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (700, 300)
    assert (usage.output_tokens, usage.reasoning_tokens) == (300, 200)


async def test_the_guardrail_denies_deepseek_and_masks_a_registration_number() -> None:
    guard = Guard.from_policy_file(POLICIES, "seoul")  # the shipped policy: openai-api allowed
    guardrail = CivicmeterGuardrail(guard, hmac_key=HMAC_KEY)
    key = UserAPIKeyAuth(team_alias="welfare")
    with pytest.raises(GuardrailRaisedException, match=r"(?i)civicmeter policy: .*deepseek"):
        await guardrail.async_pre_call_hook(
            key, DualCache(),
            {"model": "deepseek/deepseek-chat", "messages": [{"role": "user", "content": "hi"}]},
            "acompletion",
        )  # fmt: skip
    prompt = "주민등록번호 900101-1234568 확인해줘"
    data = {"model": "openai/gpt-4o", "user": "kim.minji",
            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    result = await guardrail.async_pre_call_hook(key, DualCache(), data, "acompletion")
    content = result["messages"][0]["content"]
    assert "900101-1234568" not in content
    assert content.startswith("주민등록번호 900101-1")


def openai_chat(body: bytes) -> web.Response:
    """An OpenAI-compatible provider's answer to a chat, with token counts of its own."""
    request = json.loads(body)
    words = sum(len(m["content"].split()) for m in request["messages"])
    return web.json_response({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": 1_780_000_000, "model": request["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "an answer"}}],
        "usage": {"prompt_tokens": 10 + words, "completion_tokens": 7 + words,
                  "total_tokens": 17 + 2 * words},
    })  # fmt: skip


@asynccontextmanager
async def litellm_proxy(
    ingest: Ingest, provider_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """LiteLLM's own proxy app started by its own lifespan on deploy/litellm/config.yaml (the
    README's), served in process over ASGI, its OpenAI calls going to a loopback provider."""
    environment = {
        "CONFIG_FILE_PATH": str(PROXY_CONFIG),
        "LITELLM_MASTER_KEY": "sk-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "OPENAI_API_KEY": "sk-offline",
        "OPENAI_BASE_URL": provider_url.removesuffix("/chat/completions"),
        "CIVICMETER_INGEST_URL": f"http://127.0.0.1:{ingest.settings.http_port}",
        "CIVICMETER_GATEWAY_KEY": SEOUL_TOKEN,
        "CIVICMETER_PSEUDONYM_KEY": HMAC_KEY.hex(),
        "CIVICMETER_ORGANIZATION_ID": "seoul",
        "CIVICMETER_GATEWAY_ID": "gw-seoul-1",
        "CIVICMETER_POLICY_FILE": str(POLICIES),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from litellm.proxy.proxy_server import app
    with litellm_callbacks():
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://litellm-proxy",
                headers={"Authorization": f"Bearer {environment['LITELLM_MASTER_KEY']}"},
                timeout=30,
            ) as client,
        ):
            try:
                yield client
            finally:
                # The logger the config named, loaded by the proxy: closed at its end.
                loggers = [c for c in litellm.callbacks if isinstance(c, CivicmeterLogger)]
                for logger in loggers:
                    await logger.close()
                assert len(loggers) == 1, litellm.callbacks


async def chat(proxy: httpx.AsyncClient, call_id: str, model: str, prompt: str) -> httpx.Response:
    return await proxy.post(
        "/chat/completions",
        headers={"x-litellm-call-id": call_id},  # the call id, the event's id
        json={"model": model, "messages": [{"role": "user", "content": prompt}],
              "user": "kim.minji", "metadata": {"civicmeter_department_id": "welfare"}},
    )  # fmt: skip


async def test_a_proxy_configured_by_file_meters_guards_and_denies(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = "주민등록번호 900101-1234568 확인해줘"
    call_ids = [f"proxy-{uuid.uuid4()}" for _ in range(3)]
    async with (
        scripted_server("/v1/chat/completions", openai_chat) as (provider_url, provider),
        litellm_proxy(ingest, provider_url, monkeypatch) as proxy,
    ):
        plain = await chat(proxy, call_ids[0], "gpt-4o", "how do I renew a passport?")
        redacted = await chat(proxy, call_ids[1], "gpt-4o", prompt)
        denied = await chat(proxy, call_ids[2], "deepseek/deepseek-chat", "hello")
    assert (plain.status_code, redacted.status_code) == (200, 200), plain.text
    # Refused before it left, with the policy's reason, as LiteLLM answers a guardrail's block.
    assert denied.status_code == 400
    assert re.search(r"(?i)civicmeter policy: .*deepseek", denied.json()["error"]["message"])
    # The provider got the prompt with the registration number masked.
    assert len(provider.bodies) == 2  # the denied call never reached a provider
    sent = [json.loads(body)["messages"][0]["content"] for body in provider.bodies]
    assert "how do I renew a passport?" in sent
    masked = next(text for text in sent if text.startswith("주민등록번호"))
    assert "900101-1234568" not in masked and masked.startswith("주민등록번호 900101-1")

    events = await published(ingest, set(call_ids))
    user = pseudonymise_user(HMAC_KEY, "kim.minji")
    for call_id, response in zip(call_ids[:2], (plain, redacted), strict=True):
        event = events[call_id]
        usage = response.json()["usage"]
        assert (event.usage.input_tokens, event.usage.output_tokens) == (
            usage["prompt_tokens"], usage["completion_tokens"])  # fmt: skip
        assert (event.provider_name, event.service_id, event.request_model) == (
            "openai", "openai-api", "gpt-4o")  # fmt: skip
        assert (event.organization_id, event.department_id, event.user_id, event.gateway_id) == (
            "seoul", "welfare", user, "gw-seoul-1")  # fmt: skip
    # Allowed, with a warning outside working hours (the shipped policy's off_hours rule).
    assert events[call_ids[0]].decision in (pb.DECISION_ALLOW, pb.DECISION_ALLOW_WITH_WARNING)
    assert events[call_ids[1]].decision == pb.DECISION_REDACT
    assert "pii.kr_rrn" in events[call_ids[1]].decision_rule_ids
    assert sum(events[call_ids[1]].risk.pii_findings.values()) == 1
    # The denied call is metered too: one request of DeepSeek, decided DENY (rated 0).
    refused = events[call_ids[2]]
    assert (refused.provider_name, refused.decision) == ("deepseek", pb.DECISION_DENY)
    assert refused.usage == pb.Usage(requests=1)
    assert "banned_provider" in refused.decision_rule_ids


def test_a_proxy_configuration_missing_a_setting_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="needs CIVICMETER_INGEST_URL, CIVICMETER_PSEUDONYM_KEY"):
        CivicmeterLogger.from_environment({})
    with pytest.raises(ValueError, match="CIVICMETER_PSEUDONYM_KEY must be hexadecimal"):
        CivicmeterLogger.from_environment(
            {"CIVICMETER_INGEST_URL": "http://ingest", "CIVICMETER_PSEUDONYM_KEY": "not hex"}
        )
    with pytest.raises(ValueError, match="needs policy_file and organization_id"):
        CivicmeterGuardrail(policy_file=str(POLICIES))
    monkeypatch.delenv("CIVICMETER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="variable CIVICMETER_PSEUDONYM_KEY is not set"):
        CivicmeterGuardrail(policy_file=str(POLICIES), organization_id="seoul")


def test_the_readme_shows_the_proxy_configuration_the_test_loads() -> None:
    readme = (REPO / "README.md").read_text()
    shown = re.search(r"```yaml\n(# A LiteLLM proxy metered.*?)```", readme, re.S)
    assert shown is not None and shown[1] == PROXY_CONFIG.read_text()
