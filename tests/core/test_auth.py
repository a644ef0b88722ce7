import pytest

from civicmeter.core.access.auth import (
    ApiKeyError,
    Principal,
    bearer_token,
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


def gateway_doc(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"id": "gw-seoul", "role": "gateway",
             "organization_ids": ["seoul", "busan"], "gateway_ids": ["gw-seoul-1"],
             "sha256": hash_token(TOKEN)}  # fmt: skip
    entry.update(changes)
    return {"keys": [entry]}


def test_a_gateway_key_reports_for_its_organisations_as_its_gateways() -> None:
    principal = parse_api_keys(gateway_doc()).authenticate(TOKEN)
    assert principal is not None and principal.role == "gateway"
    assert principal.reports_for("seoul") and principal.reports_for("busan")
    assert not principal.reports_for("gyeonggi") and not principal.reports_for("")
    assert not principal.reports_for("seoul,busan")  # the stored list is not an organisation
    assert principal.reports_as("gw-seoul-1") and not principal.reports_as("gw-busan-1")


def test_a_gateway_key_for_every_organisation_and_any_gateway() -> None:
    doc = gateway_doc(organization_ids=None, gateway_ids=[])
    entries = doc["keys"]
    assert isinstance(entries, list)
    del entries[0]["organization_ids"]
    entries[0]["organization_id"] = "*"
    principal = parse_api_keys(doc).authenticate(TOKEN)
    assert principal is not None
    assert principal.reports_for("gyeonggi") and principal.reports_as("anything")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"organization_ids": []}, r"keys\[0\].organization_ids"),
        ({"organization_ids": ["*"]}, r"keys\[0\].organization_ids"),
        ({"organization_id": "seoul"}, r"keys\[0\].organization_id: give"),
        ({"gateway_ids": "gw-seoul-1"}, r"keys\[0\].gateway_ids"),
        ({"role": "finance-reader"}, "are for gateway keys"),
    ],
)
def test_bad_gateway_keys_name_the_entry(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ApiKeyError, match=message):
        parse_api_keys(gateway_doc(**changes), "gateway-keys.yaml")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer cmk_abc", "cmk_abc"), ("Bearer  cmk_abc ", "cmk_abc"), ("Basic abc", ""),
     ("cmk_abc", ""), (None, "")],
)  # fmt: skip
def test_bearer_token(header: str | None, token: str) -> None:
    assert bearer_token(header) == token
