"""Who is calling: bearer API keys, stored only as hashes, each mapped to a principal with an
organisation scope and a role. The query API and ingest read files of the same form.

    # api-keys.yaml (CIVICMETER_API_KEYS_FILE, CIVICMETER_INGEST_KEYS_FILE)
    keys:
      - id: seoul-finance            # names the key in the audit log
        organization_id: seoul       # "*": every organisation (platform operators)
        role: finance-reader         # finance-reader | auditor | security | admin | gateway
        sha256: 9f86d081884c7d65...  # of the token; `civicmeter api-key` makes a pair
      - id: gw-seoul-1               # a gateway's key: what it may report usage for
        role: gateway
        organization_ids: [seoul, seoul-edu]  # instead of organization_id: several organisations
        gateway_ids: [gw-seoul-1]    # optional: the gateway ids its events may carry
        sha256: ...

The organisation a caller may see, or report usage for, comes from its key, never from a
request field. A verified client certificate (mutual TLS) stands for the key its common name
names.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GATEWAY_ROLE = "gateway"  # may publish usage events to ingest, and nothing else
ROLES = frozenset({"finance-reader", "auditor", "security", "admin", GATEWAY_ROLE})
ALL_ORGANIZATIONS = "*"
TOKEN_PREFIX = "cmk_"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ApiKeyError(ValueError):
    """The key file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    organization_id: str  # a gateway key bound to several organisations lists them, comma-separated
    role: str
    gateway_ids: frozenset[str] = frozenset()  # a gateway key's gateways; empty: any

    @property
    def sees_every_organization(self) -> bool:
        return self.organization_id == ALL_ORGANIZATIONS

    @functools.cached_property
    def _organization_set(self) -> frozenset[str]:
        return frozenset(self.organization_id.split(","))

    def reports_for(self, organization_id: str) -> bool:
        """Whether this (gateway) key may send events of this organisation."""
        return self.sees_every_organization or organization_id in self._organization_set

    def reports_as(self, gateway_id: str) -> bool:
        """Whether this (gateway) key may send events naming this gateway."""
        return not self.gateway_ids or gateway_id in self.gateway_ids


# With no key file the API is open, as this principal: for development and demos only.
OPEN_ACCESS = Principal("open-access", ALL_ORGANIZATIONS, "admin")


def hash_token(token: str) -> str:
    """SHA-256 of the token: tokens are long and random, so a fast hash suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKeys:
    by_hash: Mapping[str, Principal]

    def authenticate(self, token: str) -> Principal | None:
        return self.by_hash.get(hash_token(token)) if token else None

    def for_certificate(self, common_name: str) -> Principal | None:
        """The key a verified client certificate stands for: its common name is the key id."""
        for principal in self.by_hash.values():
            if principal.key_id == common_name:
                return principal
        return None


def bearer_token(authorization: str | None) -> str:
    """The token of an `authorization: Bearer <token>` header or metadata value, or ""."""
    if authorization and authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ").strip()
    return ""


def load_api_keys(path: Path) -> ApiKeys:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ApiKeyError(f"{path}: cannot read the key file: {exc}") from None
    return parse_api_keys(document, str(path))


def parse_api_keys(document: Any, source: str = "<api keys>") -> ApiKeys:
    if not isinstance(document, dict) or set(document) - {"keys"}:
        raise ApiKeyError(f"{source}: must be a mapping with one key, `keys`")
    entries = document.get("keys") or []
    if not isinstance(entries, list):
        raise ApiKeyError(f"{source}: keys: must be a list")
    by_hash: dict[str, Principal] = {}
    ids: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: keys[{index}]"
        if not isinstance(entry, dict):
            raise ApiKeyError(f"{where}: must be a mapping")
        unknown = set(entry) - {"id", "organization_id", "role", "sha256", *_GATEWAY_FIELDS}
        if unknown:
            raise ApiKeyError(f"{where}: unknown keys {sorted(unknown)}")
        key_id, role, digest = (entry.get(k) for k in ("id", "role", "sha256"))
        if not isinstance(key_id, str) or not _ID.fullmatch(key_id) or key_id in ids:
            raise ApiKeyError(f"{where}.id: must be a unique identifier")
        if role not in ROLES:
            raise ApiKeyError(f"{where}.role: must be one of {', '.join(sorted(ROLES))}")
        if role != GATEWAY_ROLE and set(entry) & _GATEWAY_FIELDS:
            raise ApiKeyError(
                f"{where}: {' and '.join(sorted(_GATEWAY_FIELDS))} are for gateway keys"
            )
        org = _organizations(entry, where)
        gateways = entry.get("gateway_ids", [])
        if not isinstance(gateways, list) or not all(
            isinstance(g, str) and _ID.fullmatch(g) for g in gateways
        ):
            raise ApiKeyError(f"{where}.gateway_ids: must be a list of gateway ids")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ApiKeyError(f"{where}.sha256: must be 64 lower-case hex digits")
        if digest in by_hash:
            raise ApiKeyError(f"{where}.sha256: the same token hash appears twice")
        ids.add(key_id)
        by_hash[digest] = Principal(key_id, org, str(role), frozenset(gateways))
    return ApiKeys(by_hash)


_GATEWAY_FIELDS = frozenset({"organization_ids", "gateway_ids"})


def _organizations(entry: dict[str, Any], where: str) -> str:
    """The key's organisation: `organization_id`, or a gateway key's `organization_ids`."""
    if ("organization_id" in entry) == ("organization_ids" in entry):
        raise ApiKeyError(f"{where}.organization_id: give an organisation id or '*'")
    if "organization_id" in entry:
        org = entry["organization_id"]
        if not isinstance(org, str) or not (org == ALL_ORGANIZATIONS or _ID.fullmatch(org)):
            raise ApiKeyError(f"{where}.organization_id: must be an organisation id or '*'")
        return org
    orgs = entry["organization_ids"]
    if (
        not isinstance(orgs, list)
        or not orgs
        or not all(isinstance(o, str) and _ID.fullmatch(o) for o in orgs)
    ):
        raise ApiKeyError(f"{where}.organization_ids: must be a list of organisation ids")
    return ",".join(sorted(set(orgs)))
