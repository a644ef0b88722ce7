"""Opaque page tokens for keyset pagination.

A token carries the last key returned and a fingerprint of the request it belongs to, so a
token replayed against a different query is refused rather than silently mis-paging.
"""

from __future__ import annotations

import base64
import hashlib
import json


class PageTokenError(ValueError):
    pass


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(last_key: str, request_fingerprint: str) -> str:
    raw = json.dumps({"k": last_key, "f": request_fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, request_fingerprint: str) -> str:
    """The last key of the previous page; raises PageTokenError if foreign or malformed."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        last_key, fp = data["k"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise PageTokenError("page_token is malformed") from None
    if not isinstance(last_key, str) or fp != request_fingerprint:
        raise PageTokenError("page_token does not belong to this request")
    return last_key
