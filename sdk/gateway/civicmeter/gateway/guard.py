"""The gateway's policy guard: decide on a request before it leaves, locally.

    guard = Guard("seoul")
    asyncio.create_task(guard.watch("civicmeter-decision:50053", gateway_key))  # policy, budgets
    verdict = guard.check(prompt, RequestFacts(department="welfare", user_id=user,
                                               provider="openai", service="chatgpt"))
    if verdict.outcome == "DENY":
        return refuse(verdict.reason_ko)
    forward(verdict.prompt)            # for REDACT: personal information masked in place

`check` runs the personal-information and document-marking detectors on the prompt, then the
organisation's compiled policy (policy.decision, the same function the decision service runs)
over their counts, the request's metadata and the last budget state. The prompt never leaves
the gateway: only counts and the decision go into the usage event (`verdict.annotate`).

The policy comes from `watch` (the decision service's WatchPolicy stream, authenticated with
the gateway's key), or from a policy file for offline use (`Guard.from_policy_file`). With
`cache_file`, each policy received is kept on disk, so a gateway restarted while civicmeter is
unreachable starts from the last one. While civicmeter is unreachable the guard keeps deciding
with the last policy it has and reports how stale it is (`staleness_seconds`, and
`verdict.stale` once older than `stale_after_seconds`). Banned providers are always denied,
policy or not (fail-closed). For the rest, `when_stale` says what a stale (or missing) policy
does: "decide" (the default) keeps deciding with the last policy, or the built-in defaults when
none was ever received; "deny" refuses every request until a fresh policy arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import grpc

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.usage.v1 import usage_event_pb2 as usage_pb
from civicmeter.gateway.documents import DocumentDetector
from civicmeter.gateway.pii import PII_TYPES, PiiDetector
from civicmeter.policy.compiled import budget_from_message, load_compiled
from civicmeter.policy.decision import (
    BudgetState,
    Decision,
    Outcome,
    RequestFacts,
    RuleHit,
    decide,
)
from civicmeter.policy.organization import (
    OrganizationPolicy,
    PolicyError,
    load_policies,
    parse_policies,
)

__all__ = ["Guard", "RequestFacts", "Verdict"]

log = logging.getLogger("civicmeter.gateway.guard")
WhenStale = Literal["decide", "deny"]
# Without any policy: the built-in defaults of the policy package (registration
# numbers masked, classified and confidential documents blocked, DeepSeek denied).
_BUILT_IN = parse_policies({"version": "built-in", "defaults": {}}, "<built-in policy>").defaults
_MAX_BACKOFF_SECONDS = 30.0
_DECISIONS: dict[Outcome, usage_pb.Decision.ValueType] = {
    "ALLOW": usage_pb.DECISION_ALLOW,
    "ALLOW_WITH_WARNING": usage_pb.DECISION_ALLOW_WITH_WARNING,
    "REDACT": usage_pb.DECISION_REDACT,
    "DENY": usage_pb.DECISION_DENY,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer on one request. `prompt` is what may be sent: the prompt itself
    (ALLOW, ALLOW_WITH_WARNING), masked (REDACT), or None (DENY); left out of the repr."""

    decision: Decision
    prompt: str | None = field(repr=False)
    pii_findings: Mapping[str, int]
    document_markings: Mapping[str, int]
    policy_version: str
    staleness_seconds: float | None  # since the policy or budget state last came; None: never
    stale: bool

    def annotate(self, event: usage_pb.UsageEvent) -> None:
        """Put the decision, its rule ids and the findings counts on the request's usage event
        (never the prompt). A denied request consumed nothing: with no quantity it is metered
        as one request, which the processor rates 0 as every denied request."""
        event.decision = _DECISIONS[self.decision.outcome]
        del event.decision_rule_ids[:]
        event.decision_rule_ids.extend(self.decision.rule_ids)
        for kind, count in self.pii_findings.items():
            event.risk.pii_findings[kind] = count
        if self.decision.outcome == "DENY" and not event.usage.ListFields():
            event.usage.requests = 1

    @property
    def outcome(self) -> Outcome:
        return self.decision.outcome

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return self.decision.rule_ids

    @property
    def reason_ko(self) -> str:
        return self.decision.reason_ko

    @property
    def reason_en(self) -> str:
        return self.decision.reason_en


class Guard:
    """Decides locally on each request under the organisation's last compiled policy; see the
    module docstring. Safe to share across threads for `check`."""

    def __init__(
        self,
        organization_id: str = "",
        *,
        when_stale: WhenStale = "decide",
        stale_after_seconds: float = 30.0,
        cache_file: Path | None = None,
        landlines: bool = False,
    ) -> None:
        if when_stale not in ("decide", "deny"):
            raise ValueError("when_stale: must be 'decide' or 'deny'")
        self._organization_id = organization_id
        self._when_stale = when_stale
        self._stale_after = stale_after_seconds
        self._cache_file = cache_file
        self._pii = PiiDetector(landlines=landlines)
        self._documents = DocumentDetector()
        # The policy in force and the finding types it masks, swapped together (one attribute)
        # so a check running on another thread never pairs one policy with another's types.
        self._in_force: tuple[OrganizationPolicy, frozenset[str]] = (
            _BUILT_IN,
            _redacted_types(_BUILT_IN),
        )
        self._version = ""
        self._budget: BudgetState | None = None
        self._updated: float | None = None  # time.monotonic() of the last policy or state
        if cache_file is not None and cache_file.exists():
            self._load_cache(cache_file)

    @classmethod
    def from_policy_file(cls, path: Path | str, organization_id: str, **options: Any) -> Guard:
        """A guard deciding under a policy file (config/policies.yaml form), offline: the file
        never goes stale."""
        guard = cls(organization_id, stale_after_seconds=float("inf"), **options)
        policies = load_policies(path)
        guard._set_policy(policies.for_organization(organization_id), policies.version)
        return guard

    # --- state --------------------------------------------------------------------------

    @property
    def policy_version(self) -> str:
        return self._version

    @property
    def staleness_seconds(self) -> float | None:
        """Seconds since the policy or budget state last came; None if none ever came."""
        return None if self._updated is None else time.monotonic() - self._updated

    @property
    def stale(self) -> bool:
        age = self.staleness_seconds
        return age is None or age > self._stale_after

    def apply(self, message: pb.WatchPolicyResponse) -> None:
        """Take a WatchPolicy message: a new policy and/or the budget state."""
        if message.HasField("policy"):
            compiled = load_compiled(message.policy)
            self._set_policy(compiled.defaults, message.policy.policy_version)
            self._organization_id = message.policy.organization_id or self._organization_id
            if self._cache_file is not None:
                _write_atomically(self._cache_file, message.policy.SerializeToString())
        if message.HasField("budget_state"):
            self._budget = budget_from_message(message.budget_state)
        self._updated = time.monotonic()

    def _set_policy(self, policy: OrganizationPolicy, version: str) -> None:
        self._in_force = (policy, _redacted_types(policy))
        self._version = version
        self._updated = time.monotonic()

    def _load_cache(self, path: Path) -> None:
        try:
            compiled = pb.CompiledPolicy.FromString(path.read_bytes())
            policy = load_compiled(compiled, str(path)).defaults
        except (OSError, PolicyError, ValueError) as exc:
            log.warning("the cached policy %s cannot be used: %s", path, exc)
            return
        self._set_policy(policy, compiled.policy_version)
        self._organization_id = compiled.organization_id or self._organization_id
        # As old as the file: a policy cached before a restart is not fresh.
        age = max(0.0, time.time() - path.stat().st_mtime)
        self._updated = time.monotonic() - age

    # --- deciding -------------------------------------------------------------------------

    def check(self, prompt: str, request: RequestFacts, now: datetime | None = None) -> Verdict:
        """The decision on a request with this prompt; see the module docstring."""
        policy, redacted = self._in_force
        # One pass counts every finding and masks those the policy redacts: a REDACT decision
        # masks exactly those (decision.redact_types are the ones present).
        redaction = self._pii.redact(prompt, redacted)
        pii = redaction.findings
        markings = self._documents.detect(prompt)
        staleness = self.staleness_seconds
        stale = staleness is None or staleness > self._stale_after
        moment = now or datetime.now(UTC)
        decision = decide(policy, request, pii, markings, self._budget, moment)
        if stale and decision.outcome != "DENY":
            decision = self._when_stale_decision(decision, request, staleness)
        if decision.outcome == "DENY":
            sendable: str | None = None
        elif decision.outcome == "REDACT":
            sendable = redaction.text
        else:
            sendable = prompt
        return Verdict(
            decision, sendable, pii, markings, self._version or "built-in", staleness, stale
        )

    def _when_stale_decision(
        self, decision: Decision, request: RequestFacts, staleness: float | None
    ) -> Decision:
        if self._when_stale != "deny":
            return decision
        age = "없음" if staleness is None else f"{staleness:.0f}초 전"
        hit = RuleHit(
            "policy.stale",
            "deny",
            f"최신 정책을 받지 못해 요청을 차단합니다(마지막 정책: {age}).",
            "No fresh policy from civicmeter: requests are refused until one arrives "
            f"(last policy: {'never' if staleness is None else f'{staleness:.0f} s ago'}).",
        )
        return Decision("DENY", (hit, *decision.hits), decision.redact_types)

    # --- the stream -----------------------------------------------------------------------

    async def watch(
        self,
        target: str,
        gateway_key: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """Follow the decision service's WatchPolicy stream until cancelled, reconnecting with
        backoff (up to 30 s) whenever civicmeter is unreachable."""
        backoff = 0.5
        metadata = (("authorization", f"Bearer {gateway_key}"),)
        request = pb.WatchPolicyRequest(organization_id=self._organization_id)
        while True:
            channel = (
                grpc.aio.secure_channel(target, credentials)
                if credentials is not None
                else grpc.aio.insecure_channel(target)
            )
            try:
                stub = decision_grpc.DecisionServiceStub(channel)
                async for message in stub.WatchPolicy(request, metadata=metadata):
                    self.apply(message)
                    backoff = 0.5
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "policy stream from %s: %s; deciding with the policy of %s s ago",
                    target,
                    exc.code().name,
                    "?" if self.staleness_seconds is None else f"{self.staleness_seconds:.0f}",
                )
                if exc.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    backoff = _MAX_BACKOFF_SECONDS
            except PolicyError as exc:
                log.error("the policy received cannot be compiled: %s", exc)
            finally:
                await channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)


def _redacted_types(policy: OrganizationPolicy) -> frozenset[str]:
    rules = policy.enforcement
    return frozenset(t for t in PII_TYPES if rules.finding_action(t) == "redact")


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=path.name) as file:
        file.write(data)
    os.replace(file.name, path)
