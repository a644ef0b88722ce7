"""LiteLLM integration: one usage event per call, and civicmeter's guard before each call.

A LiteLLM proxy enables both in its config alone (deploy/litellm/config.yaml, the README's
"Connect your gateway"): `callbacks: ["civicmeter.gateway.litellm.usage_logger"]`, a logger
built from the CIVICMETER_* environment when the proxy loads it, and a guardrail entry naming
`civicmeter.gateway.litellm.CivicmeterGuardrail` with its policy file and organisation as
parameters. An SDK user appends a logger to `litellm.callbacks`:

    logger = CivicmeterLogger(UsageEmitter(ingest_url, token=gateway_key),
                              hmac_key=org_key, organization_id="seoul", gateway_id="litellm-1")
    litellm.callbacks = [logger]

`CivicmeterLogger` emits exactly one event per completed or failed call, from LiteLLM's
standard logging payload: the call id is the event id (LiteLLM logs a call once; a retried
event is counted once), provider, model and operation from the call, tokens from the
provider's usage split as civicmeter bills them (cached input and reasoning output taken out
of the prompt and completion totals, as for OTLP spans), the organisation from the logger's
configuration (else the call's `civicmeter_organization_id`: a proxy's callers write the
metadata), department from the call's metadata (`civicmeter_department_id`, else the key's
team alias) and the end user, pseudonymised with `pseudonymise_user` under the organisation's
key: the user's name never leaves the gateway. A failed call that consumed no
tokens is metered as one request.

`CivicmeterGuardrail` runs `civicmeter.gateway.Guard` on the prompt before the call (LiteLLM
proxy's pre-call hook) for the provider the requested model routes to: a denied request is
refused (HTTP 400, LiteLLM's answer to a guardrail's block) with the policy's reason, a
redacted one goes on with personal information masked in its messages. The decision, its rule
ids and the findings counts go on the call's usage event (a denied call is metered as one
request, which the processor rates 0); they pass from the guardrail to the logger inside the
proxy process, keyed by the call id, never through the request's metadata, which the caller
writes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from litellm.exceptions import GuardrailRaisedException
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.gateway.emitter import UsageEmitter
from civicmeter.gateway.guard import Guard, RequestFacts, Verdict
from civicmeter.gateway.identity import pseudonymise_user
from civicmeter.policy.decision import OUTCOMES

log = logging.getLogger("civicmeter.gateway.litellm")

# LiteLLM call types -> gen_ai.operation.name.
_OPERATIONS = {
    "completion": "chat", "acompletion": "chat", "text_completion": "text_completion",
    "atext_completion": "text_completion", "embedding": "embeddings",
    "aembedding": "embeddings", "image_generation": "image_generation",
    "aimage_generation": "image_generation", "transcription": "transcription",
    "atranscription": "transcription", "speech": "speech_synthesis",
    "aspeech": "speech_synthesis", "responses": "chat", "aresponses": "chat",
    "anthropic_messages": "chat",
}  # fmt: skip
ORGANIZATION_KEY = "civicmeter_organization_id"
DEPARTMENT_KEY = "civicmeter_department_id"
# LiteLLM's convention for a secret in its config: the value names an environment variable.
_FROM_ENVIRONMENT = "os.environ/"
# The guardrail's verdicts by call id, until the logger meters the call; bounded, so calls a
# proxy without the logger guards never pile up.
_MAX_PENDING_VERDICTS = 10_000
_verdicts: OrderedDict[str, Verdict] = OrderedDict()


def __getattr__(name: str) -> Any:
    """`usage_logger`: a `CivicmeterLogger` from the environment, built when a LiteLLM proxy
    loads its config (`callbacks: ["civicmeter.gateway.litellm.usage_logger"]`)."""
    if name == "usage_logger":
        return CivicmeterLogger.from_environment(os.environ)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _setting(value: str) -> str:
    """A configured value, or the environment variable an `os.environ/NAME` value names."""
    if not value.startswith(_FROM_ENVIRONMENT):
        return value
    name = value.removeprefix(_FROM_ENVIRONMENT)
    if name not in os.environ:
        raise ValueError(f"the environment variable {name} is not set")
    return os.environ[name]


class CivicmeterLogger(CustomLogger):
    """LiteLLM logging callback: one civicmeter usage event per completed or failed call."""

    def __init__(
        self,
        emitter: UsageEmitter,
        *,
        hmac_key: bytes,
        organization_id: str = "",
        gateway_id: str = "litellm",
        default_department: str = "",
        services: Mapping[str, str] | None = None,
        flush_each_call: bool = True,
    ) -> None:
        super().__init__()
        # True: each event is sent when its call ends. False: the emitter's batches (a busy
        # proxy), flushed by the emitter's owner (`async with` or `flush`).
        self._flush_each = flush_each_call
        self._emitter = emitter
        self._key = hmac_key
        self._organization = organization_id
        self._gateway = gateway_id
        self._department = default_department
        # provider -> civicmeter service id (default: "<provider>-api", e.g. openai-api).
        self._services = dict(services or {})

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> CivicmeterLogger:
        """The logger a proxy configures by environment: CIVICMETER_INGEST_URL,
        CIVICMETER_GATEWAY_KEY (the gateway key), CIVICMETER_PSEUDONYM_KEY (the organisation's
        HMAC key, hex), CIVICMETER_ORGANIZATION_ID, CIVICMETER_GATEWAY_ID (default "litellm")
        and CIVICMETER_DEFAULT_DEPARTMENT; the last three are optional."""
        missing = [
            name
            for name in ("CIVICMETER_INGEST_URL", "CIVICMETER_PSEUDONYM_KEY")
            if not environ.get(name)
        ]
        if missing:
            raise ValueError(f"civicmeter's LiteLLM logger needs {', '.join(missing)}")
        try:
            key = bytes.fromhex(environ["CIVICMETER_PSEUDONYM_KEY"])
        except ValueError:
            raise ValueError("CIVICMETER_PSEUDONYM_KEY must be hexadecimal") from None
        return cls(
            UsageEmitter(
                environ["CIVICMETER_INGEST_URL"], token=environ.get("CIVICMETER_GATEWAY_KEY")
            ),
            hmac_key=key,
            organization_id=environ.get("CIVICMETER_ORGANIZATION_ID", ""),
            gateway_id=environ.get("CIVICMETER_GATEWAY_ID") or "litellm",
            default_department=environ.get("CIVICMETER_DEFAULT_DEPARTMENT", ""),
        )

    async def close(self) -> None:
        """Send what is buffered and close the emitter's connections (at the proxy's end)."""
        try:
            await self._emitter.flush()
        finally:
            await self._emitter.close()

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._emit(kwargs)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._emit(kwargs)

    async def _emit(self, kwargs: Mapping[str, Any]) -> None:
        payload = kwargs.get("standard_logging_object")
        if not payload:
            log.warning("a LiteLLM call without a standard logging payload was not metered")
            return
        try:
            event = self.event(payload, kwargs)
        except ValueError as exc:
            log.warning("a LiteLLM call was not metered: %s", exc)
            return
        await self._emitter.emit(event)
        if self._flush_each:
            await self._emitter.flush()

    def event(self, payload: Mapping[str, Any], kwargs: Mapping[str, Any]) -> pb.UsageEvent:
        """The usage event of one call's standard logging payload."""
        metadata = _call_metadata(payload, kwargs)
        # The configured organisation wins: a proxy's callers write the request's metadata.
        organization = str(self._organization or metadata.get(ORGANIZATION_KEY) or "")
        department = str(
            metadata.get(DEPARTMENT_KEY)
            or metadata.get("user_api_key_team_alias")
            or self._department
        )
        user = (
            payload.get("end_user")
            or metadata.get("user_api_key_end_user_id")
            or kwargs.get("user")  # the SDK's `user=` of the call
            or (kwargs.get("optional_params") or {}).get("user")
            or metadata.get("user_api_key_user_id")
        )
        if not organization or not department or not user:
            raise ValueError("the call names no organisation, department or end user")
        provider = str(payload.get("custom_llm_provider") or "").lower()
        event = pb.UsageEvent(
            event_id=str(payload.get("litellm_call_id") or payload["id"]),
            gateway_id=self._gateway,
            organization_id=organization,
            department_id=department,
            user_id=pseudonymise_user(self._key, str(user)),
            account_kind=pb.ACCOUNT_KIND_ORGANIZATIONAL,
            provider_name=provider,
            service_id=self._services.get(provider, f"{provider}-api"),
            request_model=_model_name(str(payload.get("model") or "")),
            operation_name=_OPERATIONS.get(str(payload.get("call_type")), "chat"),
            usage=_usage(payload),
        )
        started = payload.get("startTime")
        when = datetime.fromtimestamp(started, UTC) if started else datetime.now(UTC)
        event.event_time.FromDatetime(when)
        verdict = _verdicts.pop(str(kwargs.get("litellm_call_id") or event.event_id), None)
        if verdict is not None:
            verdict.annotate(event)
        return event


def _call_metadata(payload: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The payload's metadata with the caller's own (`metadata=` of the call, or the proxy's
    requester metadata) over it."""
    merged: dict[str, Any] = dict(payload.get("metadata") or {})
    merged.update(merged.get("requester_metadata") or {})
    params = kwargs.get("litellm_params") or {}
    merged.update(params.get("metadata") or {})
    return merged


def _model_name(model: str) -> str:
    """`openai/gpt-4o` -> `gpt-4o`: the provider is its own field."""
    return model.rsplit("/", 1)[-1]


def _usage(payload: Mapping[str, Any]) -> pb.Usage:
    """Prompt and completion totals less the cached and reasoning tokens they include."""
    details: Mapping[str, Any] = (payload.get("metadata") or {}).get("usage_object") or {}
    prompt = int(payload.get("prompt_tokens") or 0)
    completion = int(payload.get("completion_tokens") or 0)
    prompt_details = details.get("prompt_tokens_details") or {}
    completion_details = details.get("completion_tokens_details") or {}
    cache_read = int(prompt_details.get("cached_tokens") or 0)
    cache_write = int(details.get("cache_creation_input_tokens") or 0)
    reasoning = int(completion_details.get("reasoning_tokens") or 0)
    usage = pb.Usage(
        input_tokens=max(prompt - cache_read - cache_write, 0),
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        output_tokens=max(completion - reasoning, 0),
        reasoning_tokens=reasoning,
    )
    if not usage.ListFields():
        usage.requests = 1  # a failed call: it happened, and consumed nothing
    return usage


class CivicmeterGuardrail(CustomGuardrail):
    """LiteLLM pre-call guardrail running civicmeter's guard on the prompt, on the gateway.

    A proxy's config names it with its parameters (LiteLLM passes the entry's litellm_params):
    `policy_file` and `organization_id` build the guard (`Guard.from_policy_file`), and
    `pseudonym_key` is the organisation's HMAC key in hex, by default read from the
    environment variable CIVICMETER_PSEUDONYM_KEY; a value `os.environ/NAME` reads NAME.
    Code may pass a `guard` and `hmac_key` instead.
    """

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        hmac_key: bytes | None = None,
        policy_file: str = "",
        organization_id: str = "",
        pseudonym_key: str = "os.environ/CIVICMETER_PSEUDONYM_KEY",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("guardrail_name", "civicmeter")
        super().__init__(**kwargs)
        if guard is None:
            if not policy_file or not organization_id:
                raise ValueError("the civicmeter guardrail needs policy_file and organization_id")
            guard = Guard.from_policy_file(_setting(policy_file), _setting(organization_id))
        if hmac_key is None:
            try:
                hmac_key = bytes.fromhex(_setting(pseudonym_key))
            except ValueError as exc:
                raise ValueError(f"the civicmeter guardrail's pseudonym_key: {exc}") from None
        self._guard = guard
        self._key = hmac_key

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        metadata = {**(data.get("metadata") or {}), **(data.get("litellm_metadata") or {})}
        model = str(data.get("model") or "")
        user = data.get("user") or getattr(user_api_key_dict, "end_user_id", None) or ""
        department = str(
            metadata.get(DEPARTMENT_KEY) or getattr(user_api_key_dict, "team_alias", "") or ""
        )
        user_id = pseudonymise_user(self._key, str(user)) if user else ""
        # Each deployment the model may route to is checked: DeepSeek behind an alias is still
        # DeepSeek. Per message, the strongest verdict over the routes applies.
        routes = [
            RequestFacts(
                department=department,
                user_id=user_id,
                provider=provider,
                service=f"{provider}-api" if provider else "",
                model=model_name,
            )
            for provider, model_name in _routes(model)
        ]
        verdicts: list[tuple[dict[str, Any], Verdict]] = []
        for message in data.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                checked = (self._guard.check(content, facts) for facts in routes)
                verdicts.append((message, max(checked, key=_strength)))
        if not verdicts:
            return data
        strongest = max((verdict for _, verdict in verdicts), key=_strength)
        call_id = data.get("litellm_call_id")
        if call_id:
            _verdicts[str(call_id)] = strongest
            while len(_verdicts) > _MAX_PENDING_VERDICTS:
                _verdicts.popitem(last=False)
        if strongest.outcome == "DENY":
            raise GuardrailRaisedException(
                guardrail_name=self.guardrail_name,
                message=f"civicmeter policy: {strongest.reason_en} ({strongest.reason_ko})",
                blocked_content=True,
            )
        for message, verdict in verdicts:
            if verdict.outcome == "REDACT" and verdict.prompt is not None:
                message["content"] = verdict.prompt
        return data


def _strength(verdict: Verdict) -> int:
    return OUTCOMES.index(verdict.outcome)


def _routes(model: str) -> list[tuple[str, str]]:
    """The (provider, model) pairs a requested model may route to: its proxy deployments'
    (a model group, an alias), else the provider its name carries (`deepseek/deepseek-chat`)."""
    routes: list[tuple[str, str]] = []
    proxy = sys.modules.get("litellm.proxy.proxy_server")
    router = getattr(proxy, "llm_router", None)
    if router is not None:
        for deployment in router.registry().deployments(model, source="all"):
            params = deployment.get("litellm_params") or {}
            target = str(params.get("model") or "")
            if target and target != "*":
                provider = str(params.get("custom_llm_provider") or target.split("/", 1)[0])
                routes.append((provider.lower(), _model_name(target)))
    if not routes:
        provider = model.split("/", 1)[0].lower() if "/" in model else ""
        routes.append((provider, _model_name(model)))
    return routes
