"""The chart's decision container: `query.decision.enabled` runs the decision service in a
process of its own beside query, on its own port of the query Service. Uses the helm and
kubeconform that deploy/check.sh installs, like tests/deploy/test_chart.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.test_chart import (
    RELEASE,
    RESTRICTED_CONTAINER,
    Manifest,
    _env,
    _named,
    _render,
    _run,
    _template,
    _workload,
    helm,
    kubeconform,
)

__all__ = ["helm", "kubeconform"]  # fixtures used by the tests below

ENABLED = {
    "query": {"decision": {"enabled": True, "grpcPort": 50063, "maxWatchers": 40}},
    "otel": {"env": {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "otlp"}},
}


@pytest.fixture(scope="module")
def enabled_render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return _render(helm, tmp_path_factory.mktemp("decision"), ENABLED)


def _containers(render: list[Manifest]) -> dict[str, Manifest]:
    template = _workload(render, "query")["spec"]["template"]["spec"]
    return {c["name"]: c for c in template["containers"]}


def test_off_by_default_query_alone_serves_decisions(helm: str, tmp_path: Path) -> None:
    render = _render(helm, tmp_path)
    assert list(_containers(render)) == ["query"]
    ports = _named(render, "Service", f"{RELEASE}-query")["spec"]["ports"]
    assert "decision" not in {p["name"] for p in ports}


def test_the_decision_container_serves_its_own_port_probed_with_grpc_health(
    enabled_render: list[Manifest],
) -> None:
    decision = _containers(enabled_render)["decision"]
    assert decision["args"] == ["decision"]
    assert decision["ports"][0] == {"name": "decision", "containerPort": 50063, "protocol": "TCP"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert decision[probe]["grpc"] == {"port": 50063}, probe
    env = _env(decision)
    assert env["CIVICMETER_DECISION_GRPC_PORT"]["value"] == "50063"
    assert env["CIVICMETER_DECISION_HOST"]["value"] == "0.0.0.0"
    assert env["CIVICMETER_DECISION_MAX_WATCHERS"]["value"] == "40"
    assert env["CIVICMETER_DECISION_RATE_PER_KEY"]["value"] == "5000"
    for key, value in RESTRICTED_CONTAINER.items():
        assert decision["securityContext"].get(key) == value, key
    assert decision["resources"]["requests"]["cpu"]


def test_it_reads_what_query_reads_and_exports_metrics_on_a_port_of_its_own(
    enabled_render: list[Manifest],
) -> None:
    containers = _containers(enabled_render)
    query, decision = _env(containers["query"]), _env(containers["decision"])
    for name in ("CIVICMETER_API_KEYS_FILE", "CLICKHOUSE_HOST", "CLICKHOUSE_PASSWORD_FILE",
                 "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):  # fmt: skip
        if name in query:
            assert decision[name] == query[name], name
    assert decision["OTEL_METRICS_EXPORTER"]["value"] == "prometheus"
    # Two exporters cannot share one pod port.
    query_port = int(query.get("OTEL_EXPORTER_PROMETHEUS_PORT", {"value": "9464"})["value"])
    assert decision["OTEL_EXPORTER_PROMETHEUS_PORT"]["value"] == "9465" != str(query_port)
    ports = {p["name"]: p["containerPort"] for p in containers["decision"]["ports"]}
    assert ports == {"decision": 50063, "metrics-dec": 9465}
    mounts = {m["mountPath"] for m in containers["decision"]["volumeMounts"]}
    assert {m["mountPath"] for m in containers["query"]["volumeMounts"]} - mounts <= {
        "/etc/civicmeter/pricing"
    }


def test_the_service_and_network_policy_open_the_decision_port(
    enabled_render: list[Manifest],
) -> None:
    for name in (f"{RELEASE}-query", f"{RELEASE}-query-headless"):
        ports = {p["name"]: p for p in _named(enabled_render, "Service", name)["spec"]["ports"]}
        assert ports["decision"]["port"] == 50063
        assert ports["decision"]["targetPort"] == "decision"
    policy = _named(enabled_render, "NetworkPolicy", f"{RELEASE}-query")
    admitted = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert {50063, 9465} <= admitted


def test_prometheus_scrapes_the_decision_container_through_the_query_service(
    helm: str, tmp_path: Path
) -> None:
    values = {**ENABLED, "metrics": {"serviceMonitor": {"enabled": True}}}
    render = _render(helm, tmp_path, values)
    ports = {p["name"]: p for p in _named(render, "Service", f"{RELEASE}-query")["spec"]["ports"]}
    assert ports["metrics-decision"]["targetPort"] == "metrics-dec"
    assert ports["metrics-decision"]["port"] == 9465
    monitor = next(m for m in render if m["kind"] == "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "metrics-decision"]
    headless = _named(render, "Service", f"{RELEASE}-query-headless")["spec"]["ports"]
    assert "metrics-decision" not in {p["name"] for p in headless}


def test_the_render_with_the_decision_container_is_valid_kubernetes(
    helm: str, kubeconform: list[str], tmp_path: Path
) -> None:
    rendered = _template(helm, tmp_path, ENABLED)
    assert rendered.returncode == 0, rendered.stderr
    result = _run([*kubeconform, "-"], stdin=rendered.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout


def test_several_decision_processes_need_metrics_by_otlp(helm: str, tmp_path: Path) -> None:
    """Each process of a group exports on a port of its own, which the chart does not name:
    with the Prometheus exporter the chart refuses the group; with OTLP it sets the count."""
    values = {"query": {"decision": {"enabled": True, "processes": 2}}}
    refused = _template(
        helm, tmp_path, {**values, "otel": {"env": {"OTEL_METRICS_EXPORTER": "prometheus"}}}
    )
    assert refused.returncode != 0
    assert "query.decision.processes" in refused.stderr and "OTLP" in refused.stderr
    render = _render(helm, tmp_path, {**values, "otel": {"env": {"OTEL_METRICS_EXPORTER": "otlp"}}})
    env = _env(_containers(render)["decision"])
    assert env["CIVICMETER_DECISION_PROCESSES"]["value"] == "2"
    one = _env(_containers(_render(helm, tmp_path, ENABLED))["decision"])
    assert one["CIVICMETER_DECISION_PROCESSES"]["value"] == "1"
