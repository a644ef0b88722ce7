import pytest

from civicmeter.core.auth import (
    ApiKeyError,
    Principal,
    hash_token,
    new_token,
    parse_api_keys,
)

TOKEN = new_token()


def keys_doc(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"id": "seoul-finance", "organization_id": "seoul",
             "role": "finance-reader",
             "sha256": hash_token(TOKEN)}  # fmt: skip
    entry.update(changes)
    return {"keys": [entry]}


def test_a_token_authenticates_as_its_principal_and_nothing_else_does() -> None:
    keys = parse_api_keys(keys_doc())
    assert keys.authenticate(TOKEN) == Principal("seoul-finance", "seoul", "finance-reader")
    assert keys.authenticate(TOKEN + "x") is None
    assert keys.authenticate("") is None


def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    assert TOKEN.startswith("cmk_") and new_token() != TOKEN
    keys = parse_api_keys(keys_doc())
    assert TOKEN not in repr(keys.by_hash)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"role": "superuser"}, r"keys\[0\].role"),
        ({"sha256": "abc"}, r"keys\[0\].sha256"),
        ({"organization_id": "two words"}, r"keys\[0\].organization_id"),
        ({"secret": TOKEN}, "unknown keys"),
    ],
)
def test_bad_key_files_name_the_entry(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ApiKeyError, match=message):
        parse_api_keys(keys_doc(**changes), "api-keys.yaml")


def test_duplicate_ids_are_refused() -> None:
    doc = keys_doc()
    entries = doc["keys"]
    assert isinstance(entries, list)
    entries.append({**entries[0], "sha256": hash_token("other")})
    with pytest.raises(ApiKeyError, match="unique"):
        parse_api_keys(doc)
