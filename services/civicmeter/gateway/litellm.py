"""LiteLLM integration: one usage event per call, and civicmeter's guard before each call.

A LiteLLM proxy enables both in its config (`callbacks` and `guardrails`, see the README's
"Connect your gateway"); an SDK user appends the logger to `litellm.callbacks`:

    logger = CivicmeterLogger(UsageEmitter(ingest_url, token=gateway_key),
                              hmac_key=org_key, organization_id="seoul", gateway_id="litellm-1")
    litellm.callbacks = [logger]

`CivicmeterLogger` emits exactly one event per completed or failed call, from LiteLLM's
standard logging payload: the call id is the event id (LiteLLM logs a call once; a retried
event is counted once), provider, model and operation from the call, tokens from the
provider's usage split as civicmeter bills them (cached input and reasoning output taken out
of the prompt and completion totals, as for OTLP spans), organisation, department and user
from the call's metadata (`civicmeter_organization_id`, `civicmeter_department_id`, else the
key's team alias) and end user, pseudonymised with `pseudonymise_user` under the
organisation's key: the user's name never leaves the gateway. A failed call that consumed no
tokens is metered as one request.

`CivicmeterGuardrail` runs `civicmeter.gateway.Guard` on the prompt before the call (LiteLLM
proxy's pre-call hook): a denied request is refused with the policy's reason, a redacted one
goes on with personal information masked in its messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger

from civicmeter.gateway.emitter import UsageEmitter
from civicmeter.gateway.guard import Guard, RequestFacts
from civicmeter.gateway.identity import pseudonymise_user
from civicmeter.usage.v1 import usage_event_pb2 as pb

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
        organization = str(metadata.get(ORGANIZATION_KEY) or self._organization)
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
    """LiteLLM pre-call guardrail running civicmeter's guard on the prompt, on the gateway."""

    def __init__(self, guard: Guard, *, hmac_key: bytes, **kwargs: Any) -> None:
        kwargs.setdefault("guardrail_name", "civicmeter")
        super().__init__(**kwargs)
        self._guard = guard
        self._key = hmac_key

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        metadata = {**(data.get("metadata") or {}), **(data.get("litellm_metadata") or {})}
        model = str(data.get("model") or "")
        provider = model.split("/", 1)[0] if "/" in model else ""
        user = data.get("user") or getattr(user_api_key_dict, "end_user_id", None) or ""
        facts = RequestFacts(
            department=str(
                metadata.get(DEPARTMENT_KEY) or getattr(user_api_key_dict, "team_alias", "") or ""
            ),
            user_id=pseudonymise_user(self._key, str(user)) if user else "",
            provider=provider,
            service=f"{provider}-api" if provider else "",
            model=_model_name(model),
        )
        messages = data.get("messages") or []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str):
                continue
            verdict = self._guard.check(content, facts)
            if verdict.outcome == "DENY":
                raise ValueError(f"civicmeter policy: {verdict.reason_en} ({verdict.reason_ko})")
            if verdict.outcome == "REDACT" and verdict.prompt is not None:
                message["content"] = verdict.prompt
        return data
