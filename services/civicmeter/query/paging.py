"""Keyset paging of every listing RPC: the page size a request may ask for, and the position its
page token continues from, refused with the same INVALID_ARGUMENT messages by every servicer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import grpc

from civicmeter.query.page_token import PageTokenError, PageTokens, Position

DEFAULT_PAGE_SIZE = 100  # a page_size of 0 (unset)
MAX_PAGE_SIZE = 1000


async def page_size(context: grpc.aio.ServicerContext, requested: int) -> int:
    """The number of items the page holds: `requested`, or DEFAULT_PAGE_SIZE when it is 0."""
    if not 0 <= requested <= MAX_PAGE_SIZE:
        await _invalid(context, f"page_size: must be between 0 and {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


async def position(
    context: grpc.aio.ServicerContext,
    tokens: PageTokens,
    token: str,
    fingerprint: str,
    shape: Sequence[type[str | int]],
    field: str = "page_token",
) -> Position | None:
    """Where the page continues: None for the first page (no token), else the position the
    token carries; a token this server did not sign for this request is refused by `field`."""
    if not token:
        return None
    try:
        return tokens.decode(token, fingerprint, shape)
    except PageTokenError as exc:
        await _invalid(context, f"{field}: {exc}")


async def _invalid(context: grpc.aio.ServicerContext, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("unreachable")  # abort raises
