"""Every number read from the environment: a malformed or out-of-bounds value is a ConfigError
naming the variable and the form it must take (never a ValueError traceback, never a NaN
interval or a negative port accepted), and the services stop at start-up with exit status 2
and that one line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from civicmeter.core.config import (
    MAX_PORT,
    BillingSettings,
    ClickHouseSettings,
    ConfigError,
    IngestSettings,
    KafkaSettings,
    NotifierSettings,
    ProcessorSettings,
    QuerySettings,
    SinkSettings,
)
from civicmeter.query.decision_server import settings_from_env as decision_settings

REPO = Path(__file__).resolve().parents[2]
Reader = Callable[[Mapping[str, str]], object]


class Number(NamedTuple):
    reader: Reader
    form: str  # as the error states it
    good: str  # a value inside the bounds
    bad: tuple[str, ...]  # values outside them (every number also refuses the COMMON ones)


INTEGER_1 = "an integer of at least 1"
PORT = f"an integer from 0 to {MAX_PORT}"
POSITIVE = "a number greater than 0"
NOT_NEGATIVE = "a number of at least 0"

NUMBERS: dict[str, Number] = {
    "CIVICMETER_MAX_EVENT_AGE_DAYS": Number(
        IngestSettings.from_env, "an integer from 1 to 36500", "3650", ("0", "36501")),
    "CIVICMETER_MAX_EVENT_FUTURE_SECONDS": Number(
        ProcessorSettings.from_env, "an integer from 0 to 3153600000", "60",
        ("-1", "99999999999999")),
    "CIVICMETER_TOPIC_PARTITIONS": Number(KafkaSettings.from_env, INTEGER_1, "12", ("0",)),
    "CIVICMETER_TOPIC_REPLICATION_FACTOR": Number(KafkaSettings.from_env, INTEGER_1, "3", ("0",)),
    "KAFKA_SESSION_TIMEOUT_MS": Number(
        KafkaSettings.from_env, "an integer from 1 to 3153600000", "45000", ("0",)),
    "CLICKHOUSE_PORT": Number(
        ClickHouseSettings.from_env, f"an integer from 1 to {MAX_PORT}", "9000", ("0", "65536")),
    "CIVICMETER_INGEST_HTTP_PORT": Number(IngestSettings.from_env, PORT, "0", ("65536", "-80")),
    "CIVICMETER_INGEST_GRPC_PORT": Number(IngestSettings.from_env, PORT, "50061", ("70000",)),
    "CIVICMETER_INGEST_MAX_BATCH_EVENTS": Number(IngestSettings.from_env, INTEGER_1, "500", ("0",)),
    "CIVICMETER_INGEST_MAX_BODY_BYTES": Number(IngestSettings.from_env, INTEGER_1, "1024", ("0",)),
    "KAFKA_LINGER_MS": Number(
        IngestSettings.from_env, "an integer from 0 to 3153600000", "0", ("-5",)),
    "CIVICMETER_INGEST_REFUSED_RATE_PER_PEER": Number(
        IngestSettings.from_env, NOT_NEGATIVE, "0", ("-0.5",)),
    "CIVICMETER_INGEST_PUBLISH_TIMEOUT_SECONDS": Number(
        IngestSettings.from_env, POSITIVE, "2.5", ("0", "-1")),
    "CIVICMETER_PRICES_RELOAD_SECONDS": Number(
        ProcessorSettings.from_env, NOT_NEGATIVE, "0", ("-10",)),
    "CIVICMETER_PROCESSOR_BATCH_SIZE": Number(ProcessorSettings.from_env, INTEGER_1, "1", ("0",)),
    "CIVICMETER_PROCESSOR_STATE_INTERVAL_SECONDS": Number(
        ProcessorSettings.from_env, POSITIVE, "0.5", ("0", "-5")),
    "CIVICMETER_ALLOWED_LATENESS_SECONDS": Number(
        ProcessorSettings.from_env, "an integer from 0 to 3153600000", "0", ("-3600",)),
    "CIVICMETER_SINK_MAX_BATCH_RECORDS": Number(SinkSettings.from_env, INTEGER_1, "50", ("0",)),
    "CIVICMETER_SINK_MAX_BATCH_WAIT_MS": Number(
        SinkSettings.from_env, "an integer from 0 to 3153600000", "0", ("-1",)),
    "CIVICMETER_QUERY_GRPC_PORT": Number(QuerySettings.from_env, PORT, "50062", ("65536",)),
    "CIVICMETER_QUERY_RATE_PER_KEY": Number(QuerySettings.from_env, NOT_NEGATIVE, "0", ("-1",)),
    "CIVICMETER_QUERY_CACHE_SECONDS": Number(QuerySettings.from_env, NOT_NEGATIVE, "0.25", ("-1",)),
    "CIVICMETER_NOTIFIER_MAX_ATTEMPTS": Number(NotifierSettings.from_env, INTEGER_1, "1", ("0",)),
    "CIVICMETER_BILLING_INTERVAL_SECONDS": Number(
        BillingSettings.from_env, POSITIVE, "0.5", ("0", "-30")),
    "CIVICMETER_DECISION_GRPC_PORT": Number(decision_settings, PORT, "50063", ("65536",)),
    "CIVICMETER_DECISION_RATE_PER_KEY": Number(decision_settings, NOT_NEGATIVE, "0", ("-1",)),
    "CIVICMETER_DECISION_MAX_WATCHERS": Number(
        decision_settings, "an integer from 1 to 4096", "8", ("0", "4097")),
    "CIVICMETER_DECISION_PROCESSES": Number(
        decision_settings, "an integer from 1 to 64", "4", ("0", "65")),
    "OTEL_EXPORTER_PROMETHEUS_PORT": Number(
        lambda env: None, PORT, "9464", ()),  # read where the exporter starts (core.telemetry)
}  # fmt: skip
# Refused by every number, whatever its bounds.
COMMON = ("soon", "1O", "0x10", "nan", "inf", "-inf", "1e400")
INTEGER_ONLY = ("2.5",)  # a fraction where an integer is expected

CASES = [
    pytest.param(name, value, id=f"{name}={value}")
    for name, number in NUMBERS.items()
    if name != "OTEL_EXPORTER_PROMETHEUS_PORT"
    for value in (
        *COMMON,
        *number.bad,
        *(INTEGER_ONLY if number.form.startswith("an integer") else ()),
    )
]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_a_bad_number_is_refused_naming_the_variable_and_its_form(name: str, value: str) -> None:
    number = NUMBERS[name]
    with pytest.raises(ConfigError) as refused:
        number.reader({name: value})
    assert str(refused.value) == f"{name} must be {number.form}, got {value!r}"


@pytest.mark.parametrize("name", [n for n in NUMBERS if n != "OTEL_EXPORTER_PROMETHEUS_PORT"])
def test_a_good_number_is_read_and_an_empty_one_is_the_default(name: str) -> None:
    number = NUMBERS[name]
    given, default = number.reader({name: number.good}), number.reader({})
    assert given != default, "the good value must differ from the default to show it was read"
    assert number.reader({name: ""}) == default


def test_the_prometheus_port_is_checked_where_the_exporter_starts() -> None:
    from civicmeter.core.telemetry.setup import setup_telemetry

    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "metrics"}
    with pytest.raises(ConfigError) as refused:
        setup_telemetry("test", env)
    assert str(refused.value) == f"OTEL_EXPORTER_PROMETHEUS_PORT must be {PORT}, got 'metrics'"


_READS_ENV = ("env.get(", "env[", "os.environ", "getenv(")


def _numbers_read_in(path: Path) -> tuple[set[str], list[str]]:
    """The variables a module reads through the checked readers, and the numbers it parses
    itself in a function that reads the environment (int(raw), float(env.get(...)))."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checked: set[str] = set()
    direct: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("env_int", "env_float", "env_port") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Name) and name.id == "name":
                    continue  # one reader forwarding to another (env_port to env_int)
                assert isinstance(name, ast.Constant), f"{path}:{node.lineno}: a variable by name"
                checked.add(str(name.value))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in (
            "env_int",
            "env_float",
        ):
            if not any(read in ast.unparse(node) for read in _READS_ENV):
                continue
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Name)
                    and call.func.id in ("int", "float")
                    and call.args
                    and (isinstance(call.args[0], ast.Name) or "env" in ast.unparse(call.args[0]))
                ):
                    direct.append(f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}")
    return checked, direct


def test_every_number_the_services_read_is_checked_and_listed_here() -> None:
    read: set[str] = set()
    direct: list[str] = []
    for path in sorted((REPO / "services").rglob("*.py")):
        checked, parsed = _numbers_read_in(path)
        read |= checked
        direct += parsed
    assert direct == [], "numbers parsed from the environment without a check"
    assert read == set(NUMBERS)


SERVICES = [
    ("billing", "CIVICMETER_BILLING_INTERVAL_SECONDS", "soon"),
    ("processor", "CIVICMETER_PROCESSOR_BATCH_SIZE", "0"),
    ("ingest", "CIVICMETER_INGEST_HTTP_PORT", "http"),
    ("sink", "CIVICMETER_SINK_MAX_BATCH_WAIT_MS", "-1"),
    ("query", "CIVICMETER_QUERY_CACHE_SECONDS", "nan"),
    ("decision", "CIVICMETER_DECISION_GRPC_PORT", "70000"),
    ("notifier", "CIVICMETER_NOTIFIER_MAX_ATTEMPTS", "0"),
    ("migrate", "CLICKHOUSE_PORT", "0"),
]


@pytest.mark.parametrize(("command", "name", "value"), SERVICES, ids=[s[0] for s in SERVICES])
def test_a_service_with_a_bad_number_stops_with_one_line_and_status_2(
    tmp_path: Path, command: str, name: str, value: str
) -> None:
    """The real entry point, as an operator starting the service sees it."""
    env = {**os.environ, name: value, "CLICKHOUSE_PATH": str(tmp_path / "chdb")}
    env.pop("CIVICMETER_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "civicmeter", command],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    form = NUMBERS[name].form
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"civicmeter: configuration error: {name} must be {form}, got {value!r}"
    ]
