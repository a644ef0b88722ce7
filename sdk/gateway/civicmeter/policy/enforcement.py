"""What the gateway guard does about a request, per organisation: the `enforcement` block of
the policy file (see organization.py), read with the line of every value.

    enforcement:
      unsanctioned_service: deny          # deny | warn: a service the organisation has not
      personal_account: deny              # deny | warn   sanctioned; a personal account
      personal_information:               # per finding type: block | redact | warn | ignore
        default: warn                     # types not listed
        types: {kr_rrn: redact, kr_passport: block, email: warn, kr_brn: ignore}
      documents:                          # per marking class: block | warn | ignore
        confidential: block
        internal: warn
      budgets: deny                       # deny | warn: once a budget of the period is spent
      off_hours: warn                     # warn | require_purpose | allow

Banned providers are always denied; nothing here can lift that. Mappings merge key by key
(an organisation's `types: {email: block}` keeps the defaults' other types); values replace.
Errors name the file, the line, the entry and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from civicmeter.policy.yaml_source import At

ServiceAction = Literal["deny", "warn"]
FindingAction = Literal["block", "redact", "warn", "ignore"]
MarkingAction = Literal["block", "warn", "ignore"]
OffHoursAction = Literal["warn", "require_purpose", "allow"]

SERVICE_ACTIONS: tuple[ServiceAction, ...] = ("deny", "warn")
FINDING_ACTIONS: tuple[FindingAction, ...] = ("block", "redact", "warn", "ignore")
MARKING_ACTIONS: tuple[MarkingAction, ...] = ("block", "warn", "ignore")
OFF_HOURS_ACTIONS: tuple[OffHoursAction, ...] = ("warn", "require_purpose", "allow")
# The marking classes of gateway.documents.DOCUMENT_MARKINGS (the core does not import the SDK).
MARKING_CLASSES: tuple[str, ...] = (
    "classified",
    "confidential",
    "internal",
    "nondisclosure",
    "document_number",
    "approval_block",
    "personal_data",
)
_KEYS = (
    "unsanctioned_service",
    "personal_account",
    "personal_information",
    "documents",
    "budgets",
    "off_hours",
)


@dataclass(frozen=True)
class Enforcement:
    unsanctioned_service: ServiceAction = "deny"
    personal_account: ServiceAction = "deny"
    finding_default: FindingAction = "warn"
    findings: Mapping[str, FindingAction] = field(
        default_factory=lambda: MappingProxyType(
            {
                "kr_rrn": "redact",
                "kr_frn": "redact",
                "kr_passport": "redact",
                "kr_driver_license": "redact",
                "bank_account": "redact",
                "phone": "warn",
                "email": "warn",
                "kr_brn": "ignore",
            }
        )
    )
    markings: Mapping[str, MarkingAction] = field(
        default_factory=lambda: MappingProxyType(
            {
                "classified": "block",
                "confidential": "block",
                "internal": "warn",
                "nondisclosure": "warn",
                "document_number": "warn",
                "approval_block": "warn",
                "personal_data": "block",
            }
        )
    )
    budgets: ServiceAction = "deny"
    off_hours: OffHoursAction = "warn"

    def finding_action(self, kind: str) -> FindingAction:
        return self.findings.get(kind, self.finding_default)

    def marking_action(self, marking: str) -> MarkingAction:
        return self.markings.get(marking, "warn")


def parse_enforcement(layers: Iterable[tuple[Any, At]]) -> Enforcement:
    """The enforcement of the blocks in `layers` (the defaults' first), each over the last."""
    result = Enforcement()
    for raw, at in layers:
        if raw is None:
            continue
        result = _apply(result, raw, at)
    return result


def _apply(base: Enforcement, raw: Any, at: At) -> Enforcement:
    block = at.mapping(raw, _KEYS)
    changes: dict[str, Any] = {}
    for key in ("unsanctioned_service", "personal_account", "budgets"):
        if key in block:
            changes[key] = _choice(block[key], at.key(block, key), SERVICE_ACTIONS)
    if "off_hours" in block:
        changes["off_hours"] = _choice(block["off_hours"], at.key(block, "off_hours"),
                                       OFF_HOURS_ACTIONS)  # fmt: skip
    if "personal_information" in block:
        where = at.key(block, "personal_information")
        info = where.mapping(block["personal_information"], ("default", "types"))
        if "default" in info:
            changes["finding_default"] = _choice(
                info["default"], where.key(info, "default"), FINDING_ACTIONS
            )
        if "types" in info:
            types_at = where.key(info, "types")
            types = info["types"]
            if not isinstance(types, dict):
                types_at.fail("must be a mapping of finding type to block, redact, warn or ignore")
            merged = dict(base.findings)
            for kind, value in types.items():
                if not isinstance(kind, str) or not kind.isidentifier():
                    types_at.label(types, str(kind)).fail(
                        f"{kind!r} is not a finding type (e.g. kr_rrn)"
                    )
                merged[kind] = _choice(value, types_at.key(types, kind), FINDING_ACTIONS)
            changes["findings"] = MappingProxyType(merged)
    if "documents" in block:
        where = at.key(block, "documents")
        markings = where.mapping(block["documents"], MARKING_CLASSES)
        merged_markings = dict(base.markings)
        for marking, value in markings.items():
            merged_markings[marking] = _choice(value, where.key(markings, marking), MARKING_ACTIONS)
        changes["markings"] = MappingProxyType(merged_markings)
    return Enforcement(**{**_fields(base), **changes})


def _fields(value: Enforcement) -> dict[str, Any]:
    return {name: getattr(value, name) for name in Enforcement.__dataclass_fields__}


_T = TypeVar("_T", bound=str)


def _choice(value: Any, at: At, allowed: tuple[_T, ...]) -> _T:
    for option in allowed:
        if value == option:
            return option
    at.fail(f"{value!r} is not one of {', '.join(allowed)}")
