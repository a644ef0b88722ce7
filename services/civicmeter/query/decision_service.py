"""civicmeter.decision.v1.DecisionService: the policy decision point for AI gateways.

`Decide` answers from memory: the policy in force (reloaded when its file changes) and each
organisation's budget state, read from the billing rollups (core.budgets) at most
`refresh_seconds` ago. A call that finds its organisation's state older than that starts one
refresh in the background and decides with the state it has, so no call waits on ClickHouse
except an organisation's first. `WatchPolicy` streams the same policy and state to a gateway
so its Guard decides locally.

How far spend can overshoot a cap: a budget is seen as spent once the rollups hold the events
that spent it, i.e. after the gateway emitted them, ingest and the processor rated them and
the sink stored them (seconds), plus at most `refresh_seconds` (2 s by default, streamed at
the same pace) until the state is read again. Requests allowed in that window are the
overshoot: at most (request rate × that delay × cost per request).

The organisation is the gateway key's (core.access.auth): a key bound to one organisation decides
for it; a key bound to several names one of them in `organization_id`.

Every call is audited (query.access: one row a call, queued in memory and written in batches
off the call path). When that queue is full (storage failing for about 100 s at 1,000
calls/s) `Decide` answers UNAVAILABLE rather than decide without its audit record; the
refused call is itself counted and logged as dropped, and a gateway's Guard keeps deciding
locally with the policy it last received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.money import from_money
from civicmeter.core.access.auth import ALL_ORGANIZATIONS
from civicmeter.core.budgets import ORGANIZATION, Ledger, Period
from civicmeter.core.store.budgets import load_ledger
from civicmeter.core.store.connection import Storage
from civicmeter.policy.compiled import budget_message, compile_policy
from civicmeter.policy.decision import BudgetState, RequestFacts, Spent, decide
from civicmeter.policy.organization import PolicySet
from civicmeter.query.access import AuditLog, current_principal

log = logging.getLogger("civicmeter.query.decision")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
REFRESH_SECONDS = 2.0
POLICY_CHECK_SECONDS = 1.0  # a policy file edit decides within this long
OUTCOMES: dict[str, pb.Outcome.ValueType] = {
    "ALLOW": pb.OUTCOME_ALLOW,
    "ALLOW_WITH_WARNING": pb.OUTCOME_ALLOW_WITH_WARNING,
    "REDACT": pb.OUTCOME_REDACT,
    "DENY": pb.OUTCOME_DENY,
}
ACCOUNT_KINDS = {
    pb.ACCOUNT_KIND_UNSPECIFIED: "",
    pb.ACCOUNT_KIND_ORGANIZATIONAL: "organizational",
    pb.ACCOUNT_KIND_PERSONAL: "personal",
}


@dataclass
class _Budget:
    state: BudgetState | None = None
    read_at: float = float("-inf")  # time.monotonic() of the read
    refreshing: asyncio.Task[None] | None = None


class DecisionService(decision_grpc.DecisionServiceServicer):
    def __init__(
        self,
        storage: Storage,
        policies: Callable[[], PolicySet],
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit: AuditLog | None = None,
    ) -> None:
        self._storage = storage
        self._audit = audit
        self._policies = policies
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}
        self._policy_set = policies()
        self._policy_checked = time.monotonic()

    async def Decide(  # noqa: N802 (gRPC method name)
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        if self._audit is not None and not self._audit.has_room():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the audit log cannot take the decision's record now; retry with backoff",
            )
        organization = await _organization(context, request.organization_id)
        if request.account_kind not in ACCOUNT_KINDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "account_kind: unknown value")
        estimate = None
        if request.HasField("estimated_cost"):
            if request.estimated_cost.currency_code not in ("", "KRW"):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "estimated_cost.currency_code: must be KRW"
                )
            estimate = from_money(request.estimated_cost)
        now = (
            request.request_time.ToDatetime(tzinfo=UTC)
            if request.HasField("request_time")
            else self._clock()
        )
        policies = self._in_force()
        facts = RequestFacts(
            department=request.department_id,
            user_id=request.user_id,
            provider=request.provider,
            service=request.service,
            model=request.model,
            account_kind=ACCOUNT_KINDS[request.account_kind],
            purpose=request.purpose,
            estimated_cost_krw=estimate,
        )
        decision = decide(
            policies.for_organization(organization),
            facts,
            _counts(request.pii_findings),
            _counts(request.document_markings),
            await self.budget(organization),
            now,
        )
        return pb.DecideResponse(
            outcome=OUTCOMES[decision.outcome],
            rule_ids=decision.rule_ids,
            reason_ko=decision.reason_ko,
            reason_en=decision.reason_en,
            redact_types=sorted(decision.redact_types),
            policy_version=policies.version,
            organization_id=organization,
        )

    async def WatchPolicy(  # noqa: N802 (gRPC method name)
        self, request: pb.WatchPolicyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPolicyResponse]:
        organization = await _organization(context, request.organization_id)
        sent: PolicySet | None = None
        while True:
            policies = self._policies()
            message = pb.WatchPolicyResponse()
            if policies is not sent:
                message.policy.CopyFrom(compile_policy(policies, organization))
                sent = policies
            state = await self.budget(organization)
            if state is not None:
                message.budget_state.CopyFrom(budget_message(state))
            yield message
            await asyncio.sleep(self._refresh_seconds)

    def _in_force(self) -> PolicySet:
        """The policy in force for a decision, its file looked at once a second at most (a
        look is a system call, too dear for every decision)."""
        now = time.monotonic()
        if now - self._policy_checked >= POLICY_CHECK_SECONDS:
            self._policy_set = self._policies()
            self._policy_checked = now
        return self._policy_set

    async def budget(self, organization: str) -> BudgetState | None:
        """The organisation's budget state, read at most refresh_seconds ago (the first read
        is awaited; later ones refresh in the background). None while it cannot be read."""
        entry = self._budgets.setdefault(organization, _Budget())
        if time.monotonic() - entry.read_at >= self._refresh_seconds:
            if entry.refreshing is None or entry.refreshing.done():
                entry.refreshing = asyncio.create_task(self._refresh(organization, entry))
            if entry.state is None:
                await asyncio.shield(entry.refreshing)
        return entry.state

    async def _refresh(self, organization: str, entry: _Budget) -> None:
        as_of = self._clock()
        try:
            ledger = await self._storage.run(
                lambda client: load_ledger(client, as_of, organization, lookback_days=0)
            )
        except Exception:  # storage down: keep deciding with the last state
            log.warning("budget state of %s could not be read", organization, exc_info=True)
            return
        entry.state = budget_state(ledger, organization)
        entry.read_at = time.monotonic()


def _counts(findings: Iterable[pb.FindingCount]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.type] = counts.get(finding.type, 0) + finding.count
    return counts


def budget_state(ledger: Ledger, organization_id: str) -> BudgetState:
    """The organisation's spend in the month and the year of the ledger's moment."""
    month = Period.containing("month", ledger.as_of)
    year = Period.containing("year", ledger.as_of)
    departments = {
        department
        for org, department, _ in (*ledger.months, *ledger.days)
        if org == organization_id and department != ORGANIZATION
    } | {d for org, d in ledger.today if org == organization_id and d != ORGANIZATION}

    def spent(department: str) -> Spent:
        scope = (organization_id, department)
        return Spent(
            ledger.spent(scope, month.start, month.end).total,
            ledger.spent(scope, year.start, year.end).total,
        )

    return BudgetState(
        as_of=ledger.as_of,
        organization=spent(ORGANIZATION),
        departments={d: spent(d) for d in sorted(departments)},
    )


async def _organization(context: grpc.aio.ServicerContext, requested: str) -> str:
    """The organisation of the call: the key's own, or the one of its organisations the
    request names. Never one the key is not bound to."""
    principal = current_principal()
    bound = principal.organization_id.split(",")
    if requested:
        if not principal.reports_for(requested):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "organization_id: the credential is not bound to this organisation",
            )
        return requested
    if len(bound) != 1 or bound[0] == ALL_ORGANIZATIONS:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "organization_id: required, the credential is bound to several organisations",
        )
    return bound[0]
