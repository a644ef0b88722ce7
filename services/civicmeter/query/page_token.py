"""Opaque tokens for keyset pagination and resumable streams.

A token carries the position after which to continue (the sort key of the last item returned)
and a fingerprint of the request it belongs to, so a token replayed against a different
query is refused rather than silently mis-paging.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

Position = list[str | int]


class PageTokenError(ValueError):
    pass


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode(position: Sequence[str | int], request_fingerprint: str) -> str:
    raw = json.dumps({"p": list(position), "f": request_fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, request_fingerprint: str) -> Position:
    """The position the token continues from; raises PageTokenError if foreign or malformed."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, fp = data["p"], data["f"]
    except (ValueError, KeyError, TypeError):
        raise PageTokenError("is malformed") from None
    if fp != request_fingerprint:
        raise PageTokenError("does not belong to this request")
    if not isinstance(position, list) or not all(isinstance(p, str | int) for p in position):
        raise PageTokenError("is malformed")
    return position
