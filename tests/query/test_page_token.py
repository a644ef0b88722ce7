"""Page tokens: signed under the current key, accepted under any configured key, refused when
altered, foreign, of another request or of another shape."""

from __future__ import annotations

import base64
import json

import pytest

from civicmeter.core.config import ConfigError, QuerySettings
from civicmeter.query.page_token import MAX_TOKEN_CHARS, PageTokenError, PageTokens

NEW = "n" * 32
OLD = "o" * 32


def test_a_token_round_trips_and_an_older_key_still_verifies() -> None:
    before_rotation = PageTokens([OLD]).encode([1_700_000_000_000, "k"], "fp")
    rotated = PageTokens([NEW, OLD])
    assert rotated.decode(before_rotation, "fp", (int, str)) == [1_700_000_000_000, "k"]
    after = rotated.encode([5, "z"], "fp")
    assert PageTokens([NEW]).decode(after, "fp", (int, str)) == [5, "z"]
    with pytest.raises(PageTokenError, match="not a token this server issued"):
        PageTokens([OLD]).decode(after, "fp", (int, str))  # signed with the new key only


def _tampered(token: str, position: list[object]) -> str:
    body, tag = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["p"] = position
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + tag


@pytest.mark.parametrize(
    "token",
    [
        _tampered(PageTokens([NEW]).encode([1, "k"], "fp"), [10**30, "k"]),  # altered position
        PageTokens(["x" * 32]).encode([1, "k"], "fp"),  # another server's key
        base64.urlsafe_b64encode(b'{"p":[1,"k"],"f":"fp"}').decode(),  # the unsigned format
        "x",
        "",
        "." * 3,
        "\u00e9.\u00e9",
        "a" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_anything_but_a_token_this_server_signed_is_refused(token: str) -> None:
    with pytest.raises(PageTokenError, match="not a token this server issued"):
        PageTokens([NEW]).decode(token, "fp", (int, str))


def test_a_signed_token_of_another_request_or_shape_is_refused() -> None:
    tokens = PageTokens([NEW])
    token = tokens.encode([1, "k"], "fp")
    with pytest.raises(PageTokenError, match="does not belong to this request"):
        tokens.decode(token, "other", (int, str))
    for shape in [(str, str), (int,), (int, str, str)]:
        with pytest.raises(PageTokenError, match="malformed"):
            tokens.decode(token, "fp", shape)
    boolean = tokens.encode([True, "k"], "fp")  # JSON true is no position
    with pytest.raises(PageTokenError, match="malformed"):
        tokens.decode(boolean, "fp", (int, str))


def test_keys_come_from_the_environment_current_first_and_must_be_long() -> None:
    settings = QuerySettings.from_env({"CIVICMETER_PAGE_TOKEN_KEYS": f" {NEW} , {OLD} ,"})
    assert settings.page_token_keys == (NEW, OLD)
    assert QuerySettings.from_env({}).page_token_keys == ()
    with pytest.raises(ConfigError, match="CIVICMETER_PAGE_TOKEN_KEYS"):
        QuerySettings.from_env({"CIVICMETER_PAGE_TOKEN_KEYS": "short"})
    with pytest.raises(ValueError, match="shorter than 32"):
        PageTokens(["short"])
