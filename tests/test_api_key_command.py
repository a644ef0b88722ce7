"""`civicmeter api-key`: what a platform team runs to issue a query key or a gateway key."""

from typing import Any

import pytest
import yaml

from civicmeter.__main__ import main
from civicmeter.core.access.auth import parse_api_keys


def issue(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict[str, Any]]:
    """The token shown once, and the key file entry printed for it."""
    main(["api-key", *args])
    captured = capsys.readouterr()
    token = captured.err.rsplit(": ", 1)[1].strip()
    return token, yaml.safe_load(captured.out)


def test_a_gateway_key_for_two_organisations_and_one_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token, document = issue(
        capsys, "--id", "gw-seoul-1", "--role", "gateway", "--organization", "seoul",
        "--organization", "seoul-edu", "--gateway-id", "gw-seoul-1",
    )  # fmt: skip
    assert token not in str(document)  # the file holds only the hash
    principal = parse_api_keys(document).authenticate(token)
    assert principal is not None and principal.role == "gateway"
    assert principal.reports_for("seoul") and principal.reports_for("seoul-edu")
    assert not principal.reports_for("busan")
    assert principal.reports_as("gw-seoul-1") and not principal.reports_as("gw-seoul-2")


def test_a_query_key_keeps_its_single_organisation_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token, document = issue(capsys, "--id", "seoul-finance", "--role", "finance-reader",
                            "--organization", "seoul")  # fmt: skip
    [entry] = document["keys"]
    assert entry == {"id": "seoul-finance", "role": "finance-reader", "organization_id": "seoul",
                     "sha256": entry["sha256"]}  # fmt: skip
    assert parse_api_keys(document).authenticate(token) is not None


def test_gateway_bindings_on_a_query_key_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["api-key", "--id", "x", "--role", "auditor", "--organization", "seoul",
              "--gateway-id", "gw-1"])  # fmt: skip
    assert stopped.value.code == 2
    assert "are for gateway keys" in capsys.readouterr().err
