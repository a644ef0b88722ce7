"""Opaque tokens for keyset pagination and resumable streams, authenticated by the server.

A token carries the position after which to continue (the sort key of the last item returned)
and a fingerprint of the request it belongs to, so a token replayed against a different
query is refused rather than silently mis-paging. Both are signed with an HMAC under a server
key: a client cannot craft a position the server did not hand out (a day number of 10^10,
an `as_of` in the future), so what a token says can be trusted as far as its shape goes.

Keys come from configuration (CIVICMETER_PAGE_TOKEN_KEYS: the current key first, older keys
after it, still accepted, so a rotation does not break the pages clients are reading). With no
key configured, a random key of the process signs: its tokens do not outlive it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence

log = logging.getLogger("civicmeter.query.page_token")

Position = list[str | int]
MAX_TOKEN_CHARS = 4096  # far above any token the server hands out
MIN_KEY_CHARS = 32
_TAG_BYTES = 16


class PageTokenError(ValueError):
    pass


def fingerprint(*parts: object) -> str:
    """What a token is bound to (the request's parameters); the HMAC makes it unforgeable."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class PageTokens:
    """Signs tokens with the first key and accepts any of the keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("page tokens need at least one key")
        short = [i for i, key in enumerate(keys) if len(key) < MIN_KEY_CHARS]
        if short:
            raise ValueError(
                f"page token key {short[0]} is shorter than {MIN_KEY_CHARS} characters"
            )
        self._keys = [key.encode() for key in keys]

    @classmethod
    def random(cls) -> PageTokens:
        return cls([secrets.token_urlsafe(32)])

    def encode(self, position: Sequence[str | int], request_fingerprint: str) -> str:
        raw = json.dumps({"p": list(position), "f": request_fingerprint}, separators=(",", ":"))
        payload = raw.encode()
        return f"{_b64(payload)}.{_b64(_tag(self._keys[0], payload))}"

    def decode(
        self, token: str, request_fingerprint: str, shape: Sequence[type[str | int]]
    ) -> Position:
        """The position the token continues from, of the `shape` given (the types of its
        items); raises PageTokenError if it is not one this server signed, belongs to another
        request or is malformed."""
        if len(token) > MAX_TOKEN_CHARS:
            raise PageTokenError("is not a token this server issued")
        body, dot, tag = token.partition(".")
        try:
            payload, given = _unb64(body), _unb64(tag)
        except ValueError:
            raise PageTokenError("is not a token this server issued") from None
        if not dot or not any(hmac.compare_digest(_tag(k, payload), given) for k in self._keys):
            raise PageTokenError("is not a token this server issued")
        try:
            data = json.loads(payload)
            position, fp = data["p"], data["f"]
        except (ValueError, KeyError, TypeError):
            raise PageTokenError("is malformed") from None
        if fp != request_fingerprint:
            raise PageTokenError("does not belong to this request")
        if (
            not isinstance(position, list)
            or len(position) != len(shape)
            or not all(type(p) is kind for p, kind in zip(position, shape, strict=True))
        ):
            raise PageTokenError("is malformed")
        return position


_process_tokens: PageTokens | None = None


def process_tokens() -> PageTokens:
    """The random-key signer of this process, for servers configured without keys."""
    global _process_tokens
    if _process_tokens is None:
        log.warning(
            "CIVICMETER_PAGE_TOKEN_KEYS is not set: page tokens are signed with a random key "
            "of this process and are refused after a restart or by another replica"
        )
        _process_tokens = PageTokens.random()
    return _process_tokens


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Raises ValueError for anything but unpadded URL-safe base64 (binascii.Error is one)."""
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))
