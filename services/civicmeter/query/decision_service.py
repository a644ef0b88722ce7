"""civicmeter.decision.v1.DecisionService: the policy decision point for AI gateways.

`Decide` answers from memory: the policy in force (reloaded when its file changes) and each
organisation's budget state, read from the billing rollups (core.budgets) at most
`refresh_seconds` ago. A call that finds its organisation's state older than that starts one
refresh in the background and decides with the state it has, so no call waits on ClickHouse
except an organisation's first, and that one at most FIRST_READ_SECONDS: past that (ClickHouse
hung or down since the process started) it is decided without a budget state, so without the
budget caps, as a Guard that has received none decides. `WatchPolicy` streams the same
policy and state to a gateway so its Guard decides locally.

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
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from clickhouse_connect.driver.client import Client

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.decision.v1 import decision_service_pb2_grpc as decision_grpc
from civicmeter.api.money import from_money
from civicmeter.core.access.auth import ALL_ORGANIZATIONS
from civicmeter.core.budgets import ORGANIZATION, Ledger, Period
from civicmeter.core.store.budgets import load_ledger
from civicmeter.core.store.connection import StorageCalls
from civicmeter.policy.compiled import budget_message, compile_policy
from civicmeter.policy.decision import BudgetState, RequestFacts, Spent, decide
from civicmeter.policy.organization import PolicySet
from civicmeter.query.access import AuditLog, RefusedError, current_principal, served_for

log = logging.getLogger("civicmeter.query.decision")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
REFRESH_SECONDS = 2.0
# How long an organisation's first call waits for its first budget read: never a thread held
# for as long as a hung ClickHouse takes (the thread-pool server has four for calls).
FIRST_READ_SECONDS = 3.0
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


@dataclass(frozen=True)
class Question:
    """A checked `Decide` request: whose it is, what it asks, and when."""

    organization: str
    facts: RequestFacts
    pii: dict[str, int]
    documents: dict[str, int]
    now: datetime


class Decisions:
    """The decision itself, request to response, shared by the servicers of both server models:
    `ask` checks a request (the audit queue's room, the organisation, the arguments) and
    `answer` decides it with the organisation's budget state. Neither waits on anything, so
    either runs on an event loop or in a pool thread."""

    def __init__(
        self,
        policies: Callable[[], PolicySet],
        clock: Callable[[], datetime],
        audit: AuditLog | None,
    ) -> None:
        self._policies = policies
        self._clock = clock
        self._audit = audit
        self._lock = threading.Lock()  # one look at the policy file at a time
        self._policy_set = policies()
        self._policy_checked = time.monotonic()

    def ask(self, request: pb.DecideRequest) -> Question:
        """The request's question, or a RefusedError (or ArgumentError) naming what is wrong."""
        if self._audit is not None and not self._audit.has_room():
            raise RefusedError(
                grpc.StatusCode.UNAVAILABLE,
                "the audit log cannot take the decision's record now; retry with backoff",
            )
        organization = organization_of_call(request.organization_id)
        if request.account_kind not in ACCOUNT_KINDS:
            raise RefusedError(grpc.StatusCode.INVALID_ARGUMENT, "account_kind: unknown value")
        estimate = None
        if request.HasField("estimated_cost"):
            if request.estimated_cost.currency_code not in ("", "KRW"):
                raise RefusedError(
                    grpc.StatusCode.INVALID_ARGUMENT, "estimated_cost.currency_code: must be KRW"
                )
            estimate = from_money(request.estimated_cost)
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
        now = (
            request.request_time.ToDatetime(tzinfo=UTC)
            if request.HasField("request_time")
            else self._clock()
        )
        return Question(
            organization,
            facts,
            _counts(request.pii_findings),
            _counts(request.document_markings),
            now,
        )

    def answer(self, question: Question, budget: BudgetState | None) -> pb.DecideResponse:
        policies = self.in_force()
        decision = decide(
            policies.for_organization(question.organization),
            question.facts,
            question.pii,
            question.documents,
            budget,
            question.now,
        )
        return pb.DecideResponse(
            outcome=OUTCOMES[decision.outcome],
            rule_ids=decision.rule_ids,
            reason_ko=decision.reason_ko,
            reason_en=decision.reason_en,
            redact_types=sorted(decision.redact_types),
            policy_version=policies.version,
            organization_id=question.organization,
        )

    def in_force(self) -> PolicySet:
        """The policy in force for a decision, its file looked at once a second at most (a
        look is a system call, too dear for every decision)."""
        now = time.monotonic()
        if now - self._policy_checked >= POLICY_CHECK_SECONDS:
            with self._lock:
                if now - self._policy_checked >= POLICY_CHECK_SECONDS:
                    self._policy_set = self._policies()
                    self._policy_checked = now
        return self._policy_set

    def latest(self) -> PolicySet:
        """The policy file's latest good version, looked at now (for the policy stream)."""
        with self._lock:
            return self._policies()

    def watch_message(
        self, organization: str, sent: PolicySet | None, state: BudgetState | None
    ) -> tuple[pb.WatchPolicyResponse, PolicySet]:
        """The stream's next message: the compiled policy when it changed since `sent`, and
        the budget state; and the policy it carries."""
        policies = self.latest()
        message = pb.WatchPolicyResponse()
        if policies is not sent:
            message.policy.CopyFrom(compile_policy(policies, organization))
        if state is not None:
            message.budget_state.CopyFrom(budget_message(state))
        return message, policies


@dataclass
class _Budget:
    state: BudgetState | None = None
    read_at: float = float("-inf")  # time.monotonic() of the read
    reading: threading.Event = field(default_factory=threading.Event)  # set: no read running

    def __post_init__(self) -> None:
        self.reading.set()


def _read_ledger(as_of: datetime, organization: str, client: Client) -> Ledger:
    # Module-level, so that it can be sent to a storage process (pickled by name).
    return load_ledger(client, as_of, organization, lookback_days=0)


class BudgetStates:
    """Each organisation's budget state, read at most `refresh_seconds` ago. A call that finds
    its organisation's state older starts one read in a thread of its own and goes on with the
    state it has, so no call waits on storage except an organisation's first (which waits for
    that read; None while the state cannot be read). Shared by threads and the event loop."""

    def __init__(
        self, storage: StorageCalls, clock: Callable[[], datetime], refresh_seconds: float
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._budgets: dict[str, _Budget] = {}
        self._lock = threading.Lock()

    def get(self, organization: str) -> BudgetState | None:
        """For a pool thread: the state, waiting only for an organisation's first read (at most
        FIRST_READ_SECONDS)."""
        entry, reading = self._refreshed(organization)
        if entry.state is None:
            reading.wait(FIRST_READ_SECONDS)
        return entry.state

    async def get_async(self, organization: str) -> BudgetState | None:
        """For the event loop: the state, awaiting only an organisation's first read (at most
        FIRST_READ_SECONDS)."""
        entry, reading = self._refreshed(organization)
        if entry.state is None:
            await asyncio.to_thread(reading.wait, FIRST_READ_SECONDS)
        return entry.state

    def _refreshed(self, organization: str) -> tuple[_Budget, threading.Event]:
        """The organisation's entry, a read started when its state is stale, and the event the
        read in progress sets when it ends."""
        entry = self._budgets.get(organization)
        if entry is not None and time.monotonic() - entry.read_at < self._refresh_seconds:
            return entry, entry.reading
        with self._lock:
            entry = self._budgets.setdefault(organization, _Budget())
            stale = time.monotonic() - entry.read_at >= self._refresh_seconds
            if stale and entry.reading.is_set():
                entry.reading = threading.Event()
                threading.Thread(
                    target=self._read,
                    args=(organization, entry, entry.reading),
                    name=f"budget-read-{organization}",
                    daemon=True,
                ).start()
            return entry, entry.reading

    def _read(self, organization: str, entry: _Budget, done: threading.Event) -> None:
        as_of = self._clock()
        try:
            ledger = self._storage.call(functools.partial(_read_ledger, as_of, organization))
        except Exception:  # storage down: keep deciding with the last state
            log.warning("budget state of %s could not be read", organization, exc_info=True)
        else:
            entry.state = budget_state(ledger, organization)
            entry.read_at = time.monotonic()
        finally:
            done.set()


class _Servicer(decision_grpc.DecisionServiceServicer):
    """What both servicers hold: the decisions and the budget states."""

    def __init__(
        self,
        storage: StorageCalls,
        policies: Callable[[], PolicySet],
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit: AuditLog | None = None,
    ) -> None:
        self._decisions = Decisions(policies, clock, audit)
        self._budgets = BudgetStates(storage, clock, refresh_seconds)
        self._refresh_seconds = refresh_seconds


class DecisionService(_Servicer):
    """The servicer on grpc.aio (the query service serves it for gateways configured before the
    decision service had a process of its own)."""

    async def Decide(  # noqa: N802 (gRPC method name)
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        question = self._decisions.ask(request)
        budget = await self._budgets.get_async(question.organization)
        return self._decisions.answer(question, budget)

    async def WatchPolicy(  # noqa: N802 (gRPC method name)
        self, request: pb.WatchPolicyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchPolicyResponse]:
        organization = organization_of_call(request.organization_id)
        sent: PolicySet | None = None
        while True:
            state = await self._budgets.get_async(organization)
            message, sent = self._decisions.watch_message(organization, sent, state)
            yield message
            await asyncio.sleep(self._refresh_seconds)


class ThreadedDecisionService(_Servicer):
    """The servicer on the thread-pool server (query.decision_server): the same decisions,
    in plain functions. A `WatchPolicy` stream holds its pool thread for its whole life (asleep
    between messages), so at most `max_watchers` run at once; one more is refused with
    RESOURCE_EXHAUSTED, and its gateway's Guard retries with backoff, deciding meanwhile with
    the policy it has."""

    def __init__(
        self,
        storage: StorageCalls,
        policies: Callable[[], PolicySet],
        max_watchers: int,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        audit: AuditLog | None = None,
    ) -> None:
        super().__init__(storage, policies, refresh_seconds, clock, audit)
        self.max_watchers = max_watchers
        self._watchers = threading.BoundedSemaphore(max_watchers)

    def Decide(  # noqa: N802 (gRPC method name)
        self, request: pb.DecideRequest, context: grpc.ServicerContext
    ) -> pb.DecideResponse:
        question = self._decisions.ask(request)
        return self._decisions.answer(question, self._budgets.get(question.organization))

    def WatchPolicy(  # noqa: N802 (gRPC method name)
        self, request: pb.WatchPolicyRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchPolicyResponse]:
        organization = organization_of_call(request.organization_id)
        if not self._watchers.acquire(blocking=False):
            raise RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"WatchPolicy: this decision service follows at most {self.max_watchers} "
                "gateways at a time, all taken; retry with backoff (Decide still answers)",
            )
        try:
            ended = threading.Event()  # the call ended: cancelled, its deadline, server stop
            context.add_callback(ended.set)
            sent: PolicySet | None = None
            while context.is_active():
                state = self._budgets.get(organization)
                message, sent = self._decisions.watch_message(organization, sent, state)
                yield message
                ended.wait(self._refresh_seconds)
        finally:
            self._watchers.release()


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


def organization_of_call(requested: str) -> str:
    """The organisation of the call: the key's own, or the one of its organisations the
    request names. Never one the key is not bound to."""
    principal = current_principal()
    bound = principal.organization_id.split(",")
    if requested:
        if not principal.reports_for(requested):
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                "organization_id: the credential is not bound to this organisation",
            )
        organization = requested
    elif len(bound) != 1 or bound[0] == ALL_ORGANIZATIONS:
        raise RefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "organization_id: required, the credential is bound to several organisations",
        )
    else:
        organization = bound[0]
    served_for(organization)  # the audit row names it, though the request may not
    return organization
