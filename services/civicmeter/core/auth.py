"""Who is calling: bearer API keys, stored only as hashes, each mapped to a principal with an
organisation scope and a role.

    # api-keys.yaml (CIVICMETER_API_KEYS_FILE)
    keys:
      - id: seoul-finance            # names the key in the audit log
        organization_id: seoul       # "*": every organisation (platform operators)
        role: finance-reader         # finance-reader | auditor | security | admin
        sha256: 9f86d081884c7d65...  # of the token; `civicmeter api-key` makes a pair

The organisation a caller may see comes from its key, never from a request field.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = frozenset({"finance-reader", "auditor", "security", "admin"})
ALL_ORGANIZATIONS = "*"
TOKEN_PREFIX = "cmk_"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ApiKeyError(ValueError):
    """The key file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    organization_id: str
    role: str

    @property
    def sees_every_organization(self) -> bool:
        return self.organization_id == ALL_ORGANIZATIONS


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
        unknown = set(entry) - {"id", "organization_id", "role", "sha256"}
        if unknown:
            raise ApiKeyError(f"{where}: unknown keys {sorted(unknown)}")
        key_id, org, role, digest = (
            entry.get(k) for k in ("id", "organization_id", "role", "sha256")
        )
        if not isinstance(key_id, str) or not _ID.fullmatch(key_id) or key_id in ids:
            raise ApiKeyError(f"{where}.id: must be a unique identifier")
        if not isinstance(org, str) or not (org == ALL_ORGANIZATIONS or _ID.fullmatch(org)):
            raise ApiKeyError(f"{where}.organization_id: must be an organisation id or '*'")
        if role not in ROLES:
            raise ApiKeyError(f"{where}.role: must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ApiKeyError(f"{where}.sha256: must be 64 lower-case hex digits")
        if digest in by_hash:
            raise ApiKeyError(f"{where}.sha256: the same token hash appears twice")
        ids.add(key_id)
        by_hash[digest] = Principal(key_id, org, str(role))
    return ApiKeys(by_hash)
