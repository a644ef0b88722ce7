import pytest

from civicmeter.gateway.identity import pseudonymise_user

KEY = b"0123456789abcdef-seoul"


def test_the_same_user_under_the_same_key_is_the_same_id() -> None:
    assert pseudonymise_user(KEY, "Kim.Minji ") == pseudonymise_user(KEY, "kim.minji")


def test_the_id_reveals_nothing_and_differs_by_key() -> None:
    user_id = pseudonymise_user(KEY, "kim.minji@seoul.go.kr")
    assert "kim" not in user_id and "@" not in user_id
    assert user_id != pseudonymise_user(b"another-key-of-16+bytes", "kim.minji@seoul.go.kr")
    assert user_id.startswith("u_") and len(user_id) == 34


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        pseudonymise_user(b"short", "kim")
