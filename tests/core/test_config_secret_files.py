"""Passwords from mounted Secret files (CLICKHOUSE_PASSWORD_FILE, KAFKA_SASL_PASSWORD_FILE), so a
deployment keeps them out of the process environment; a file that cannot be read stops the
service at start-up with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from civicmeter.core.config import ClickHouseSettings, ConfigError, KafkaSettings

REPO = Path(__file__).resolve().parents[2]


def secret_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "password"
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("content", ["s3cret pass\n", "s3cret pass\r\n", "s3cret pass"])
def test_the_clickhouse_password_comes_from_its_file(tmp_path: Path, content: str) -> None:
    path = secret_file(tmp_path, content)
    settings = ClickHouseSettings.from_env(
        {"CLICKHOUSE_INTERFACE": "https", "CLICKHOUSE_PASSWORD_FILE": str(path)}
    )
    # The line break a file written by an editor or `echo` ends with is not part of it.
    assert settings.password == "s3cret pass"


def test_the_kafka_sasl_password_comes_from_its_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "scram-password\n")
    settings = KafkaSettings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "civicmeter",
        "KAFKA_SASL_PASSWORD_FILE": str(path),
    })  # fmt: skip
    assert settings.sasl_password == "scram-password"
    assert settings.sasl_username == "civicmeter"


def test_passwords_in_the_environment_still_work() -> None:
    assert ClickHouseSettings.from_env({"CLICKHOUSE_PASSWORD": "p"}).password == "p"
    assert KafkaSettings.from_env({"KAFKA_SASL_PASSWORD": "k"}).sasl_password == "k"
    assert ClickHouseSettings.from_env({}).password == ""
    assert KafkaSettings.from_env({}).sasl_password is None


@pytest.mark.parametrize(
    ("settings", "name"),
    [(ClickHouseSettings, "CLICKHOUSE_PASSWORD"), (KafkaSettings, "KAFKA_SASL_PASSWORD")],
)
def test_a_missing_or_unreadable_file_names_the_variable(
    tmp_path: Path, settings: type[ClickHouseSettings] | type[KafkaSettings], name: str
) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=rf"^{name}_FILE: cannot read .*absent.*No such file"):
        settings.from_env({f"{name}_FILE": str(missing)})
    with pytest.raises(ConfigError, match=rf"^{name}_FILE: cannot read .*Is a directory"):
        settings.from_env({f"{name}_FILE": str(tmp_path)})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=rf"^{name}_FILE: cannot read .*not UTF-8 text"):
        settings.from_env({f"{name}_FILE": str(binary)})


def test_a_password_both_inline_and_in_a_file_is_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "from-file")
    with pytest.raises(ConfigError, match="CLICKHOUSE_PASSWORD and CLICKHOUSE_PASSWORD_FILE"):
        ClickHouseSettings.from_env(
            {"CLICKHOUSE_PASSWORD": "inline", "CLICKHOUSE_PASSWORD_FILE": str(path)}
        )


def test_a_service_refuses_to_start_without_its_password_file(tmp_path: Path) -> None:
    """`civicmeter migrate`, the first thing a deployment runs, as the operator sees it."""
    env = {
        **os.environ,
        "CLICKHOUSE_INTERFACE": "http",
        "CLICKHOUSE_HOST": "127.0.0.1",
        "CLICKHOUSE_PASSWORD_FILE": str(tmp_path / "clickhouse" / "password"),
    }
    env.pop("CLICKHOUSE_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, "-m", "civicmeter", "migrate"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "configuration error: CLICKHOUSE_PASSWORD_FILE: cannot read" in result.stderr
    assert "Traceback" not in result.stderr
