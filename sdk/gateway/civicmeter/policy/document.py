"""The policy file's values read by their place: every block's checks, and the error they raise.

Each reader takes the value's place (`At`: file, line, path from the root, as the line-aware
loader of yaml_source gives it) and fails there, so an error reads

    config/policies.yaml:14: defaults.working_hours.start: must be a time "HH:MM" ...

Documents built in code (plain dicts) are read the same way, without lines.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from civicmeter.api.severity import SEVERITIES, Severity
from civicmeter.policy.yaml_source import At, LocatedMap, SourceError

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")  # organisations, departments, users
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # providers, services, schedules, finding types


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file, the entry and the reason."""


class PolicySourceError(SourceError, PolicyError):
    """A policy error with its place: the file, the line when known, the entry, the reason."""


def root(source: str) -> At:
    """The place of the policy document `source` itself."""
    return At(source, PolicySourceError)


def mapping(at: At, value: Any) -> dict[Any, Any]:
    """`value` as a mapping; an absent block (None) is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        at.fail("must be a mapping")
    return value


def as_list(at: At, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        at.fail("must be a list")
    return value


def names(at: At, value: Any, pattern: re.Pattern[str]) -> list[str]:
    items = as_list(at, value)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            at.item(items, index).fail(f"{item!r} is not a valid name")
    return items


def check_keys(at: At, block: Mapping[Any, Any], allowed: Collection[str]) -> None:
    """Refuses keys not in `allowed`, on the line of the first of them."""
    unknown = set(block) - set(allowed)
    if unknown:
        lines = block.key_lines if isinstance(block, LocatedMap) else {}
        first = min(unknown, key=lambda key: lines.get(key, 0))
        at.on_line_of(block, first).fail(f"unknown keys {sorted(map(str, unknown))}")


def severity(at: At, value: Any, *also: str) -> Severity:
    if value not in SEVERITIES:
        allowed = ", ".join((*SEVERITIES, *also))
        at.fail(f"{value!r} is not one of {allowed}")
    return typing.cast(Severity, value)


def integer(at: At, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        at.fail(f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        at.fail(f"must be between {low} and {high}, got {value}")
    return value


def number(at: At, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        at.fail(f"must be a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        at.fail(f"{value!r} is not a number")
    if not low <= result <= high:
        at.fail(f"must be between {low:g} and {high:g}, got {result:g}")
    return result


def money(at: At, value: Any, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        # A YAML float would already have lost precision: amounts are quoted decimal strings.
        at.fail('must be a whole number or a quoted decimal, e.g. "5000000"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        at.fail(f"{value!r} is not a decimal number")
    if not amount.is_finite() or amount < 0 or (positive and amount == 0):
        at.fail(f"must be a {'positive' if positive else 'non-negative'} amount")
    return amount
