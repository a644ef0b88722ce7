"""The policy file's `enforcement` block: defaults, merging, and errors with file and line."""

from pathlib import Path

import pytest

from civicmeter.gateway.documents import DOCUMENT_MARKINGS
from civicmeter.policy.enforcement import MARKING_CLASSES
from civicmeter.policy.organization import PolicyError, load_policies

REPO = Path(__file__).resolve().parents[2]

BASE = """version: "t"
defaults:
  sanctioned_services: [chatgpt]
  enforcement:
    personal_account: warn
    personal_information:
      types: {email: block}
    documents: {internal: block}
organizations:
  seoul:
    enforcement:
      personal_information:
        types: {phone: redact}
      off_hours: require_purpose
  busan: {}
"""


def test_the_shipped_file_redacts_registration_numbers_and_blocks_confidential_documents() -> None:
    rules = load_policies(REPO / "config" / "policies.yaml").for_organization("daegu").enforcement
    assert rules.finding_action("kr_rrn") == "redact"
    assert rules.finding_action("email") == "warn"
    assert rules.finding_action("kr_brn") == "ignore"
    assert rules.marking_action("confidential") == "block"
    assert rules.marking_action("internal") == "warn"
    assert rules.budgets == "deny"


def test_an_organisation_merges_types_key_by_key_over_the_defaults(tmp_path: Path) -> None:
    policies = load_policies(_write(tmp_path, BASE))
    seoul = policies.for_organization("seoul").enforcement
    assert seoul.finding_action("phone") == "redact"
    assert seoul.finding_action("email") == "block"  # the defaults' type stays
    assert seoul.finding_action("kr_rrn") == "redact"  # the built-in default stays
    assert seoul.off_hours == "require_purpose"
    assert seoul.personal_account == "warn"
    assert seoul.marking_action("internal") == "block"
    busan = policies.for_organization("busan").enforcement
    assert busan.finding_action("phone") == "warn"
    assert busan.off_hours == "warn"
    assert policies.for_organization("unlisted").enforcement == busan


@pytest.mark.parametrize(
    ("old", "new", "line", "where", "reason"),
    [
        ("personal_account: warn", "personal_account: maybe", 5, "defaults.enforcement."
         "personal_account", "'maybe' is not one of deny, warn"),
        ("types: {email: block}", "types: {email: hide}", 7, "defaults.enforcement."
         "personal_information.types.email", "'hide' is not one of block, redact, warn, ignore"),
        ("documents: {internal: block}", "documents: {secret: block}", 8,
         "defaults.enforcement.documents.secret", "unknown key 'secret'"),
        ("off_hours: require_purpose", "off_hours: deny", 14,
         "organizations.seoul.enforcement.off_hours", "'deny' is not one of warn, "
         "require_purpose, allow"),
        ("documents: {internal: block}", "documents: {internal: redact}", 8,
         "defaults.enforcement.documents.internal", "not one of block, warn, ignore"),
    ],
)  # fmt: skip
def test_errors_name_the_file_the_line_the_entry_and_the_reason(
    tmp_path: Path, old: str, new: str, line: int, where: str, reason: str
) -> None:
    path = _write(tmp_path, BASE.replace(old, new))
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {where}: "), message
    assert reason in message


def test_banned_providers_cannot_be_lifted_from_the_enforcement_block(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("off_hours: require_purpose", "banned_provider: warn"))
    with pytest.raises(PolicyError, match="unknown key 'banned_provider'"):
        load_policies(path)


def test_a_key_given_twice_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("  busan: {}\n", "  busan: {}\n  busan: {}\n"))
    with pytest.raises(PolicyError, match=rf"^{path}:16: organizations.busan: the key is given"):
        load_policies(path)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_marking_classes_are_the_document_detectors() -> None:
    assert MARKING_CLASSES == DOCUMENT_MARKINGS
