"""Pseudonymous user ids: a keyed HMAC of the gateway's user name, never the name itself."""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise_user(key: bytes, user: str) -> str:
    """A stable, non-reversible id for `user` under `key` (HMAC-SHA256, 32 hex chars).

    The key is the organisation's secret: without it nobody can test a guess of who a user is.
    """
    if len(key) < 16:
        raise ValueError("the HMAC key must be at least 16 bytes")
    digest = hmac.new(key, user.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
    return "u_" + digest[:32]
