"""What the decision service hands a gateway, and back: an organisation's compiled policy and
its budget state, as the messages of civicmeter.decision.v1 carry them.

The policy travels as a self-contained policy document (YAML) holding only that organisation's
block with the defaults merged in, so a gateway never sees another organisation's policy, and
the SDK compiles it with the parser the services use (policy.organization): both sides decide
alike (policy.decision).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from civicmeter.api.decision.v1 import decision_service_pb2 as pb
from civicmeter.api.money import from_money, to_money
from civicmeter.policy.decision import BudgetState, Spent
from civicmeter.policy.organization import (
    PolicySet,
    PolicySourceError,
    parse_policies,
)
from civicmeter.policy.yaml_source import parse_yaml


def compile_policy(policies: PolicySet, organization_id: str) -> pb.CompiledPolicy:
    """The organisation's policy as a document of its own."""
    policy = policies.for_organization(organization_id)
    document = {"version": policies.version, "defaults": _plain(policy.document or {})}
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    return pb.CompiledPolicy(
        organization_id=organization_id,
        policy_version=policies.version,
        policy_document=text,
    )


def load_compiled(message: pb.CompiledPolicy, source: str = "<compiled policy>") -> PolicySet:
    """The policy a CompiledPolicy holds; its organisation's policy is the set's defaults.

    Raises PolicyError naming the line when the document is malformed."""
    return parse_policies(parse_yaml(message.policy_document, source, PolicySourceError), source)


def budget_message(state: BudgetState) -> pb.BudgetState:
    message = pb.BudgetState(
        organization_month_spent=to_money(state.organization.month_krw),
        organization_year_spent=to_money(state.organization.year_krw),
    )
    message.as_of_time.FromDatetime(state.as_of.astimezone(UTC))
    for department, spent in state.departments.items():
        message.departments.add(
            department_id=department,
            month_spent=to_money(spent.month_krw),
            year_spent=to_money(spent.year_krw),
        )
    return message


def budget_from_message(message: pb.BudgetState) -> BudgetState:
    return BudgetState(
        as_of=_time(message.as_of_time),
        organization=Spent(
            from_money(message.organization_month_spent),
            from_money(message.organization_year_spent),
        ),
        departments={
            d.department_id: Spent(from_money(d.month_spent), from_money(d.year_spent))
            for d in message.departments
        },
    )


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _plain(value: Any) -> Any:
    """Frozen mappings and tuples as the dicts and lists yaml.safe_dump writes."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, str, int, float, bool)) or value is None:
        return value
    return str(value)
