"""The Helm chart deploy/helm/civicmeter: its values schema, and what it renders.

helm and kubeconform are the ones deploy/check.sh installs (its cache directory first, then
PATH), with the offline Kubernetes schemas it writes. Without them these tests fail: run
`deploy/check.sh --install-only` first. They never skip.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "civicmeter"
KUBERNETES_VERSION = "1.37.0"
TIMEOUT_SECONDS = 60
RELEASE = "civicmeter"
NAMESPACE = "metering"

Manifest = dict[str, Any]

RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _tools_dir() -> Path:
    cache = os.environ.get("CIVICMETER_CACHE_DIR") or str(Path.home() / ".cache" / "civicmeter")
    return Path(cache) / "tools"


def _tool(name: str) -> str:
    cached = _tools_dir() / "bin" / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is neither in {cached.parent} nor on PATH: run deploy/check.sh "
            "--install-only (it installs the pinned helm, kubeconform and schemas)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def kubeconform() -> list[str]:
    schemas = _tools_dir() / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-standalone-strict"
    if not (schemas / "deployment-apps-v1.json").is_file():
        pytest.fail(
            f"no Kubernetes {KUBERNETES_VERSION} schemas in {schemas.parent}: run "
            "deploy/check.sh --install-only",
            pytrace=False,
        )
    location = (
        f"{schemas.parent}/{{{{ .NormalizedKubernetesVersion }}}}-standalone"
        "{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    return [
        _tool("kubeconform"),
        "-strict",
        "-summary",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        location,
        "-skip",
        "ServiceMonitor,PrometheusRule",
    ]


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )


def _values_file(tmp_path: Path, values: Mapping[str, Any]) -> Path:
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def _template(
    helm: str, tmp_path: Path, values: Mapping[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBERNETES_VERSION]
    if values is not None:
        args += ["-f", str(_values_file(tmp_path, values))]
    return _run(args)


def _lint(helm: str, tmp_path: Path, values: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    return _run([helm, "lint", "--strict", str(CHART), "-f", str(_values_file(tmp_path, values))])


def _render(helm: str, tmp_path: Path, values: Mapping[str, Any] | None = None) -> list[Manifest]:
    result = _template(helm, tmp_path, values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def default_render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    return _render(helm, tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def production_render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    return _render(helm, tmp_path_factory.mktemp("production"), values)


def _of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def _named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in _of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


WORKLOADS = ("Deployment", "StatefulSet")  # the processors are a StatefulSet, the rest Deployments


def _workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in WORKLOADS]


def _workload(manifests: list[Manifest], component: str) -> Manifest:
    name = f"{RELEASE}-{component}"
    matches = [m for m in _workloads(manifests) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"{name}: {len(matches)} found"
    return matches[0]


def _pod_templates(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for manifest in manifests:
        if manifest["kind"] in (*WORKLOADS, "Job"):
            yield manifest["metadata"]["name"], manifest["spec"]["template"]


def _containers(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for name, template in _pod_templates(manifests):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{name}/{container['name']}", container


def _container(manifests: list[Manifest], component: str) -> Manifest:
    deployment = _workload(manifests, component)
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---- the values schema rejects what a platform team would get wrong


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        ({"ingest": {"replicaz": 2}}, "/ingest", "'replicaz' not allowed"),
        ({"ingres": {"enabled": True}}, "", "'ingres' not allowed"),
        ({"kafka": {"sasl": {"pasword": "x"}}}, "/kafka/sasl", "'pasword' not allowed"),
        (
            {"networkPolicy": {"egress": {"kafka": {"too": []}}}},
            "/networkPolicy/egress/kafka",
            "'too' not allowed",
        ),
        (
            {"containerSecurityContext": {"readOnlyRootFileSystem": True}},
            "/containerSecurityContext",
            "'readOnlyRootFileSystem' not allowed",
        ),
        ({"notifier": {"webhookSecret": []}}, "/notifier", "'webhookSecret' not allowed"),
        (
            {"notifier": {"webhookSecrets": [{"name": "A", "secretName": "s", "kee": "k"}]}},
            "/notifier/webhookSecrets/0",
            "'kee' not allowed",
        ),
        ({"policies": {"configMap": "p"}}, "/policies", "'configMap' not allowed"),
        (
            {"networkPolicy": {"egress": {"webhook": {"ports": [443]}}}},
            "/networkPolicy/egress",
            "'webhook' not allowed",
        ),
    ],
)
def test_a_typo_in_values_fails_template_and_lint_with_a_schema_error(
    helm: str, tmp_path: Path, values: dict[str, Any], path: str, message: str
) -> None:
    for result in (_template(helm, tmp_path, values), _lint(helm, tmp_path, values)):
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "schema" in output
        assert f"at '{path}'" in output
        assert message in output


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        ({"ingest": {"replicas": "two"}}, "/ingest/replicas", "want integer"),
        ({"kafka": {"topics": {"create": "false"}}}, "/kafka/topics/create", "want boolean"),
        ({"clickhouse": {"port": "8443"}}, "/clickhouse/port", "want integer"),
        ({"clickhouse": {"port": 70000}}, "/clickhouse/port", "maximum"),
        ({"kafka": {"securityProtocol": "SASL_TLS"}}, "/kafka/securityProtocol", "SASL_SSL"),
        ({"kafka": {"bootstrapServers": "kafka"}}, "/kafka/bootstrapServers", "pattern"),
        (
            {"query": {"resources": {"requests": {"cpu": "lots"}}}},
            "/query/resources/requests/cpu",
            "does not match pattern",
        ),
        ({"otel": {"env": {"OTEL_METRICS_EXPORTER": "statsd"}}}, "/otel/env", "prometheus"),
        # helm reports propertyNames errors at a wrong location, so only the message counts.
        ({"otel": {"env": {"JAVA_OPTS": "-Xmx1g"}}}, "", "'JAVA_OPTS' does not match pattern"),
        ({"ingest": {"podLabels": {"tier": 1}}}, "/ingest/podLabels/tier", "want string"),
        # One cursor: a second notifier would deliver every alert twice.
        ({"notifier": {"replicas": 2}}, "/notifier/replicas", "maximum"),
        (
            {"notifier": {"webhookSecrets": [{"name": "SECURITY-WEBHOOK", "secretName": "s"}]}},
            "/notifier/webhookSecrets/0",
            "missing property 'key'",
        ),
        (
            {"notifier": {"webhookSecrets": [{"name": "A-B", "secretName": "s", "key": "k"}]}},
            "/notifier/webhookSecrets/0/name",
            "does not match pattern",
        ),
    ],
)
def test_a_wrong_type_or_value_fails_with_a_schema_error(
    helm: str, tmp_path: Path, values: dict[str, Any], path: str, message: str
) -> None:
    result = _template(helm, tmp_path, values)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert f"at '{path}" in result.stderr
    assert message in result.stderr


def test_sasl_without_a_password_or_secret_fails_with_the_setting_named(
    helm: str, tmp_path: Path
) -> None:
    values = {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"username": "civicmeter"}}}
    result = _template(helm, tmp_path, values)
    assert result.returncode != 0
    assert "kafka.sasl.password or kafka.sasl.existingSecret is required" in result.stderr


def test_a_webhook_variable_named_twice_fails_with_the_setting_named(
    helm: str, tmp_path: Path
) -> None:
    secrets = [
        {"name": "CIVICMETER_WEBHOOK_SECURITY", "secretName": "a", "key": "url"},
        {"name": "CIVICMETER_WEBHOOK_SECURITY", "secretName": "b", "key": "url"},
    ]
    result = _template(helm, tmp_path, {"notifier": {"webhookSecrets": secrets}})
    assert result.returncode != 0
    assert "notifier.webhookSecrets names CIVICMETER_WEBHOOK_SECURITY twice" in result.stderr


def test_every_object_in_the_schema_is_closed_and_every_field_typed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    untyped: list[str] = []
    open_objects: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        if "type" not in node:
            untyped.append(where or "/")
        if node.get("type") == "object":
            extra = node.get("additionalProperties")
            # Closed (false), a typed map (a schema), or a Kubernetes object passed through as
            # is (true), which says so and is left to kubeconform and the API server.
            if extra is None or (extra is True and "Kubernetes" not in node["description"]):
                open_objects.append(where or "/")
            if isinstance(extra, dict):
                walk(extra, f"{where}/*")
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}/{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}/[]")

    walk(schema, "")
    assert untyped == []
    assert open_objects == []


def test_the_default_catalog_is_the_project_price_catalog() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["pricing"]["catalog"] == (REPO / "config" / "prices.yaml").read_text()


# ---- kubeconform catches what the schema passes through to Kubernetes


def test_the_default_render_is_valid_kubernetes(
    helm: str, kubeconform: list[str], tmp_path: Path
) -> None:
    rendered = _template(helm, tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    result = _run([*kubeconform, "-"], stdin=rendered.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0" in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"ingest": {"tolerations": [{"key": "gpu", "operator": "Exists", "efect": "x"}]}},
            "additional properties 'efect' not allowed",
        ),
        ({"sink": {"extraEnv": [{"name": "A", "valu": "b"}]}}, "'valu' not allowed"),
        (
            {"processor": {"livenessProbe": {"exec": {"command": "true"}}}},
            "got string, want",
        ),
        (
            {"networkPolicy": {"ingress": {"ingest": [{"namespaceSelector": {"app": "gw"}}]}}},
            "'app' not allowed",
        ),
    ],
)
def test_broken_kubernetes_objects_in_values_fail_kubeconform(
    helm: str, kubeconform: list[str], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    rendered = _template(helm, tmp_path, values)
    assert rendered.returncode == 0, rendered.stderr  # the schema lets Kubernetes objects through
    result = _run([*kubeconform, "-"], stdin=rendered.stdout)
    assert result.returncode != 0
    assert message in result.stdout


# ---- what the default render promises


def test_every_container_runs_restricted(default_render: list[Manifest]) -> None:
    containers = dict(_containers(default_render))
    assert len(containers) == 7  # six services and the migration Job
    for name, container in containers.items():
        context = container["securityContext"]
        for key, value in RESTRICTED_CONTAINER.items():
            assert context.get(key) == value, f"{name}: securityContext.{key}"
    for name, template in _pod_templates(default_render):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert template["spec"]["automountServiceAccountToken"] is False, name


def test_a_read_only_root_keeps_tmp_and_the_processor_data_dir_writable(
    default_render: list[Manifest],
) -> None:
    for name, container in _containers(default_render):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "/tmp" in mounts, name
    processor = _named(default_render, "StatefulSet", f"{RELEASE}-processor")
    data_dir = _env(_container(default_render, "processor"))["CIVICMETER_PROCESSOR_DATA_DIR"]
    mounts = {
        m["mountPath"]: m["name"] for m in _container(default_render, "processor")["volumeMounts"]
    }
    volumes = {v["name"]: v for v in processor["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[data_dir["value"]]]


def test_every_pod_template_carries_the_config_checksum(default_render: list[Manifest]) -> None:
    templates = dict(_pod_templates(default_render))
    assert len(templates) == 7
    for name, template in templates.items():
        checksum = template["metadata"]["annotations"].get("checksum/config", "")
        assert re.fullmatch("[0-9a-f]{64}", checksum), name


def test_a_price_change_rolls_the_pods(
    helm: str, tmp_path: Path, default_render: list[Manifest]
) -> None:
    catalog = (REPO / "config" / "prices.yaml").read_text() + "# a new price\n"
    changed = _render(helm, tmp_path, {"pricing": {"catalog": catalog}})

    def checksum(manifests: list[Manifest]) -> str:
        deployment = _named(manifests, "StatefulSet", f"{RELEASE}-processor")
        annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"]

    assert checksum(changed) != checksum(default_render)


def test_the_processor_reads_the_catalog_from_the_pricing_config_map(
    default_render: list[Manifest],
) -> None:
    container = _container(default_render, "processor")
    prices_file = _env(container)["CIVICMETER_PRICES_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if prices_file.startswith(m["mountPath"]))
    processor = _named(default_render, "StatefulSet", f"{RELEASE}-processor")
    volume = next(
        v for v in processor["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    config_map = _named(default_render, "ConfigMap", volume["configMap"]["name"])
    key = prices_file.removeprefix(mount["mountPath"] + "/")
    assert config_map["data"][key] == (REPO / "config" / "prices.yaml").read_text()


@pytest.mark.parametrize(("component", "port"), [("ingest", 50051), ("query", 50052)])
def test_grpc_services_are_probed_with_grpc_health_on_their_port(
    default_render: list[Manifest], component: str, port: int
) -> None:
    container = _container(default_render, component)
    assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["grpc"] == {"port": port}
    assert container["startupProbe"]["grpc"] == {"port": port}
    # The servers bind to 127.0.0.1 unless told otherwise; the kubelet probes the pod IP.
    host = _env(container)[f"CIVICMETER_{component.upper()}_HOST"]["value"]
    assert host == "0.0.0.0"


def test_ingest_liveness_uses_healthz_and_query_liveness_grpc(
    default_render: list[Manifest],
) -> None:
    assert _container(default_render, "ingest")["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "http",
    }
    assert _container(default_render, "query")["livenessProbe"]["grpc"] == {"port": 50052}
    for component in ("processor", "sink", "notifier", "billing"):
        assert "livenessProbe" not in _container(default_render, component)


def _secret_file(template: Manifest, container: Manifest, path: str) -> tuple[str, str]:
    """The Secret and key a container reads the file `path` from (a mounted secret volume)."""
    parent, name = path.rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == parent]
    assert mount["readOnly"] is True, path
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == name]
    # Readable by the pod's group (fsGroup) only, not by every user of the node.
    assert volume["secret"]["defaultMode"] == 0o440, path
    return volume["secret"]["secretName"], item["key"]


@pytest.mark.parametrize("component", ["sink", "query", "notifier", "billing"])
def test_the_clickhouse_password_is_a_file_from_a_secret(
    default_render: list[Manifest], component: str
) -> None:
    container = _container(default_render, component)
    env = _env(container)
    assert env["CLICKHOUSE_INTERFACE"]["value"] == "https"
    assert "CLICKHOUSE_PASSWORD" not in env  # never in the environment
    template = _workload(default_render, component)["spec"]["template"]
    name, key = _secret_file(template, container, env["CLICKHOUSE_PASSWORD_FILE"]["value"])
    assert key in _named(default_render, "Secret", name)["data"]


def test_no_password_is_an_environment_variable_in_any_scenario(
    helm: str, default_render: list[Manifest], production_render: list[Manifest], tmp_path: Path
) -> None:
    staging = yaml.safe_load((CHART / "ci" / "monitoring-disabled-values.yaml").read_text())
    renders = {
        "default": default_render,
        "production": production_render,
        "staging": _render(helm, tmp_path, staging),  # SASL with the password as a value
    }
    for scenario, manifests in renders.items():
        files = 0
        for name, container in _containers(manifests):
            for entry in container.get("env", []):
                assert not entry["name"].endswith("PASSWORD"), f"{scenario} {name}"
                files += entry["name"].endswith("PASSWORD_FILE")
        assert files > 0, scenario
    # Staging's SASL password, given as a value, is in the chart's Secret as each file's source.
    secret = _named(renders["staging"], "Secret", f"{RELEASE}-credentials")
    for component in ("ingest", "processor", "sink", "billing"):
        container = _container(renders["staging"], component)
        template = _workload(renders["staging"], component)["spec"]["template"]
        path = _env(container)["KAFKA_SASL_PASSWORD_FILE"]["value"]
        name, key = _secret_file(template, container, path)
        assert name == secret["metadata"]["name"], component
        assert (
            base64.b64decode(secret["data"][key]).decode() == staging["kafka"]["sasl"]["password"]
        )


def test_the_migration_hook_brings_its_own_secret_and_service_account(
    default_render: list[Manifest],
) -> None:
    job = _named(default_render, "Job", f"{RELEASE}-migration")
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["migrate"]
    # A pre-install hook runs before the release's other objects exist: what it uses must be
    # a hook too, created before it (a lower weight).
    account = _named(default_render, "ServiceAccount", spec["serviceAccountName"])
    container = spec["containers"][0]
    path = _env(container)["CLICKHOUSE_PASSWORD_FILE"]["value"]
    name, key = _secret_file(job["spec"]["template"], container, path)
    secret = _named(default_render, "Secret", name)
    assert key in secret["data"]
    for dependency in (account, secret):
        annotations = dependency["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == hook["helm.sh/hook"]
        assert int(annotations["helm.sh/hook-weight"]) < int(hook["helm.sh/hook-weight"])


def test_a_private_clickhouse_ca_reaches_every_clickhouse_client(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "ci" / "monitoring-disabled-values.yaml").read_text())
    manifests = _render(helm, tmp_path, values)
    ca = values["clickhouse"]["tls"]["caCert"]
    clients = dict(_pod_templates(manifests))
    assert set(clients) >= {
        f"{RELEASE}-{client}" for client in ("sink", "query", "notifier", "billing", "migration")
    }
    for name, template in clients.items():
        container = template["spec"]["containers"][0]
        env = _env(container)
        if "CLICKHOUSE_HOST" not in env:
            assert "CLICKHOUSE_CA_CERT" not in env, name
            continue
        ca_file = Path(env["CLICKHOUSE_CA_CERT"]["value"])
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(ca_file.parent))
        volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
        secret = _named(manifests, "Secret", volume["secret"]["secretName"])
        (item,) = volume["secret"]["items"]
        assert item["path"] == ca_file.name
        assert base64.b64decode(secret["data"][item["key"]]).decode() == ca, name


def test_production_takes_every_credential_from_existing_secrets(
    production_render: list[Manifest],
) -> None:
    assert _of_kind(production_render, "Secret") == []
    secret_like = re.compile(r"PASSWORD$|HMAC_KEY|SECRET|TOKEN|WEBHOOK")
    for name, container in _containers(production_render):
        for entry in container.get("env", []):
            if secret_like.search(entry["name"]):
                assert "value" not in entry, f"{name}: {entry['name']} is a literal"
                assert "secretKeyRef" in entry["valueFrom"], f"{name}: {entry['name']}"
    env = _env(_container(production_render, "processor"))
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    template = _workload(production_render, "processor")["spec"]["template"]
    sasl = env["KAFKA_SASL_PASSWORD_FILE"]["value"]
    assert _secret_file(template, _container(production_render, "processor"), sasl) == (
        "civicmeter",
        "password",
    )
    for component in ("sink", "query", "notifier", "billing"):
        container = _container(production_render, component)
        template = _workload(production_render, component)["spec"]["template"]
        path = _env(container)["CLICKHOUSE_PASSWORD_FILE"]["value"]
        assert _secret_file(template, container, path) == ("civicmeter-clickhouse", "password")
    assert env["CIVICMETER_CREATE_TOPICS"]["value"] == "false"
    ca_file = Path(env["KAFKA_SSL_CAFILE"]["value"])
    mounts = {
        m["mountPath"]: m["name"]
        for m in _container(production_render, "processor")["volumeMounts"]
    }
    processor = _named(production_render, "StatefulSet", f"{RELEASE}-processor")
    volumes = {v["name"]: v for v in processor["spec"]["template"]["spec"]["volumes"]}
    ca_volume = volumes[mounts[str(ca_file.parent)]]["secret"]
    assert ca_volume["secretName"] == "metering-cluster-ca-cert"
    assert ca_volume["items"] == [{"key": "ca.crt", "path": ca_file.name}]


def test_services_target_ports_their_pods_expose(production_render: list[Manifest]) -> None:
    pods = [t for _, t in _pod_templates(_workloads(production_render))]
    services = _of_kind(production_render, "Service")
    # ingest and query (+ headless); processor, sink, notifier and billing metrics
    assert len(services) == 8
    for service in services:
        selected = [
            p for p in pods if _selects(service["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in selected[0]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]


def test_the_service_monitor_scrapes_each_pod_once(production_render: list[Manifest]) -> None:
    monitor = _named(production_render, "ServiceMonitor", RELEASE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    scraped = [
        s["spec"]["selector"]["app.kubernetes.io/component"]
        for s in _of_kind(production_render, "Service")
        if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        and "metrics" in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert sorted(scraped) == ["billing", "ingest", "notifier", "processor", "query", "sink"]


def test_the_alerts_watch_lag_dead_letters_rejections_anomalies_and_webhooks(
    production_render: list[Manifest],
) -> None:
    rule = _named(production_render, "PrometheusRule", RELEASE)
    rules = {
        r.get("alert") or r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
    }
    # Lag from the services' own gauge, each partition counted once, summed per group.
    lag = rules["namespace_group:civicmeter_kafka_consumer_lag:sum"]
    assert 'civicmeter_kafka_consumer_lag{namespace="metering"}' in lag
    assert "messaging_destination_partition_id" in lag
    growing = rules["CivicmeterConsumerLagGrowing"]
    assert 'messaging_consumer_group_name=~"civicmeter-processor|civicmeter-sink"} > 50000' in (
        growing
    )
    assert "deriv(namespace_group:civicmeter_kafka_consumer_lag:sum" in growing
    unreported = rules["CivicmeterConsumerLagUnreported"]
    for group in ("civicmeter-processor", "civicmeter-sink"):
        assert f'messaging_consumer_group_name="{group}"' in unreported
    assert "CivicmeterConsumerLagGrowingExporter" not in rules  # kafkaExporterLag is off
    # p99 ingest latency over HTTP (the probes left out) and gRPC, and freshness.
    http = rules["CivicmeterIngestLatencyHigh"]
    assert (
        "histogram_quantile(0.99" in http and "http_server_request_duration_seconds_bucket" in http
    )
    assert 'http_route!="/healthz"' in http and http.rstrip().endswith("> 0.5")
    grpc_rule = rules["CivicmeterIngestGrpcLatencyHigh"]
    assert "rpc_server_call_duration_seconds_bucket" in grpc_rule
    assert "IngestService" in grpc_rule
    freshness = rules["CivicmeterFreshnessSlow"]
    assert "civicmeter_sink_event_latency_seconds_bucket" in freshness
    assert freshness.rstrip().endswith("> 60")
    assert 'outcome="dead_lettered"' in rules["CivicmeterDeadLettersGrowing"]
    assert "civicmeter_(processor|sink)_events_total" in rules["CivicmeterDeadLettersGrowing"]
    assert 'outcome="rejected"' in rules["CivicmeterIngestRejecting"]
    assert (
        'civicmeter_alerts_total{namespace="metering", severity=~"high|critical"}'
        in (rules["CivicmeterHighSeverityAnomaly"])
    )
    # The counter civicmeter.notifier.deliveries, as the Prometheus exporter names it.
    assert (
        'civicmeter_notifier_deliveries_total{namespace="metering", outcome="failed"}'
        in rules["CivicmeterWebhookDeliveryFailing"]
    )
    # The counter civicmeter.billing.seat_charges: seats the catalog cannot price.
    assert (
        'civicmeter_billing_seat_charges_total{namespace="metering", outcome="unpriced"}'
        in rules["CivicmeterSeatsUnpriced"]
    )
    assert "CivicmeterIngestDown" in rules  # additionalRules


def test_the_kafka_exporter_lag_alert_is_an_option(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    values["metrics"]["prometheusRule"]["kafkaExporterLag"] = True
    values["sink"] = {"enabled": False}
    rule = _named(_render(helm, tmp_path, values), "PrometheusRule", RELEASE)
    rules = {r.get("alert"): r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    exporter = rules["CivicmeterConsumerLagGrowingExporter"]
    assert 'kafka_consumergroup_lag{consumergroup=~"civicmeter-processor"}' in exporter
    assert "civicmeter-sink" not in rules["CivicmeterConsumerLagUnreported"]
    assert "CivicmeterFreshnessSlow" not in rules  # the sink's histogram: no sink, no alert


def test_the_alert_unit_tests_pass_on_the_rendered_rules(
    helm: str, tmp_path: Path, production_render: list[Manifest]
) -> None:
    """deploy/alerts_test.yaml fires each latency, freshness and lag alert on synthetic series
    (as deploy/check.sh runs it), against the rules rendered in its namespace."""
    values = CHART / "ci" / "production-values.yaml"
    args = [helm, "template", RELEASE, str(CHART), "--namespace", "civicmeter", "-f", str(values)]
    rendered = _run([*args, "--kube-version", KUBERNETES_VERSION])
    assert rendered.returncode == 0, rendered.stderr
    manifests = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    spec = _named(manifests, "PrometheusRule", RELEASE)["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tests = REPO / "deploy" / "alerts_test.yaml"
    (tmp_path / "alerts_test.yaml").write_text(tests.read_text())
    promtool = _tool("promtool")
    checked = _run([promtool, "check", "rules", str(tmp_path / "rules.yaml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True,
        text=True, timeout=TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # Every new alert is fired by some test there.
    fired = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert fired >= {
        "CivicmeterIngestLatencyHigh", "CivicmeterIngestGrpcLatencyHigh",
        "CivicmeterFreshnessSlow", "CivicmeterConsumerLagGrowing",
        "CivicmeterConsumerLagUnreported",
    }  # fmt: skip


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(
    production_render: list[Manifest],
) -> None:
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in _of_kind(production_render, "HorizontalPodAutoscaler")
    }
    assert scaled == {f"{RELEASE}-ingest", f"{RELEASE}-query"}
    for deployment in _workloads(production_render):
        name = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name


def test_every_deployment_has_a_disruption_budget(production_render: list[Manifest]) -> None:
    budgets = _of_kind(production_render, "PodDisruptionBudget")
    for deployment in _workloads(production_render):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, deployment["metadata"]["name"]


def test_network_policies_admit_only_the_ports_each_service_serves(
    production_render: list[Manifest],
) -> None:
    pods = {
        t["metadata"]["labels"]["app.kubernetes.io/component"]: t
        for _, t in _pod_templates(production_render)
    }
    policies = _of_kind(production_render, "NetworkPolicy")
    assert len(policies) == 7
    for policy in policies:
        spec = policy["spec"]
        component = spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        container_ports = {
            p["containerPort"]
            for c in pods[component]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        for rule in spec["ingress"]:
            assert rule["from"], f"{component}: ingress from anywhere"
            assert {p["port"] for p in rule["ports"]} <= container_ports, component
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        expected = {53, 4317}
        if component in ("ingest", "processor", "sink", "billing"):
            expected.add(9093)  # the Kafka bootstrap port
        if component in ("sink", "query", "notifier", "billing", "migration"):
            expected.add(8443)  # ClickHouse over HTTPS
        if component == "notifier":
            expected.add(443)  # the webhook hosts
        assert egress_ports == expected, component


# ---- processors: any number, each its own member of the consumer group


def test_three_processors_are_three_static_members_of_one_group(
    helm: str, kubeconform: list[str], tmp_path: Path
) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    values["processor"]["replicas"] = 3
    result = _template(helm, tmp_path, values)
    assert result.returncode == 0, result.stderr
    checked = _run(kubeconform, stdin=result.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    processors = _named(manifests, "StatefulSet", f"{RELEASE}-processor")
    spec = processors["spec"]
    assert spec["replicas"] == 3
    # Pods named <statefulset>-0, -1, -2 whatever node they land on, started together.
    assert spec["podManagementPolicy"] == "Parallel"
    pods = [f"{processors['metadata']['name']}-{ordinal}" for ordinal in range(3)]
    # Each pod's own name is its group instance id: three distinct, stable members.
    env = _env(_container(manifests, "processor"))
    assert env["KAFKA_GROUP_INSTANCE_ID"] == {
        "name": "KAFKA_GROUP_INSTANCE_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert len(set(pods)) == 3
    assert all(re.fullmatch(r"[a-z0-9.-]{1,63}", pod) for pod in pods)  # a legal Kafka id too
    # ...of one consumer group: nothing sets a group per pod.
    assert "CIVICMETER_PROCESSOR_GROUP_ID" not in env
    # As many partitions as processors at least, or some would idle.
    assert int(env["CIVICMETER_TOPIC_PARTITIONS"]["value"]) >= 3
    # The governing headless Service selects exactly the processor pods.
    governing = _named(manifests, "Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"] == spec["selector"]["matchLabels"]
    pod_labels = spec["template"]["metadata"]["labels"]
    # One budget keeps two of three running through a node drain.
    [budget] = [
        b
        for b in _of_kind(manifests, "PodDisruptionBudget")
        if _selects(b["spec"]["selector"]["matchLabels"], pod_labels)
    ]
    assert budget["spec"]["maxUnavailable"] == 1
    # Every processor reaches Kafka.
    [policy] = [
        p
        for p in _of_kind(manifests, "NetworkPolicy")
        if _selects(p["spec"]["podSelector"]["matchLabels"], pod_labels)
    ]
    assert 9093 in {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_more_processors_than_partitions_is_refused_with_both_named(
    helm: str, tmp_path: Path
) -> None:
    result = _template(
        helm, tmp_path, {"processor": {"replicas": 13}, "kafka": {"topics": {"partitions": 12}}}
    )
    assert result.returncode != 0
    assert "processor.replicas (13) is more than kafka.topics.partitions (12)" in result.stderr


# ---- the notifier and the policy file


def _pod_spec(manifests: list[Manifest], component: str) -> Manifest:
    deployment = _workload(manifests, component)
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def _mounted_file(manifests: list[Manifest], component: str, path: str) -> tuple[Manifest, str]:
    """The volume a container reads `path` from, and the file's path inside that volume."""
    container = _container(manifests, component)
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volumes = {v["name"]: v for v in _pod_spec(manifests, component)["volumes"]}
    return volumes[mount["name"]], path.removeprefix(mount["mountPath"] + "/")


def test_the_notifier_runs_one_restricted_pod_on_clickhouse_without_kafka(
    production_render: list[Manifest],
) -> None:
    deployment = _named(production_render, "Deployment", f"{RELEASE}-notifier")
    # One cursor: never two pods, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    template = deployment["spec"]["template"]
    assert re.fullmatch("[0-9a-f]{64}", template["metadata"]["annotations"]["checksum/config"])
    container = _container(production_render, "notifier")
    assert container["args"] == ["notifier"]
    for key, value in RESTRICTED_CONTAINER.items():
        assert container["securityContext"].get(key) == value, key
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert template["spec"]["automountServiceAccountToken"] is False
    env = _env(container)
    assert _secret_file(template, container, env["CLICKHOUSE_PASSWORD_FILE"]["value"]) == (
        "civicmeter-clickhouse",
        "password",
    )
    assert env["CLICKHOUSE_HOST"]["value"] == "clickhouse.metering.svc"
    assert "CLICKHOUSE_CA_CERT" in env
    assert env["CIVICMETER_NOTIFIER_MAX_ATTEMPTS"]["value"] == "5"
    # Production Kafka is SASL_SSL with a CA: none of it reaches the notifier.
    assert [name for name in env if name.startswith("KAFKA_")] == []
    assert "CIVICMETER_CREATE_TOPICS" not in env
    assert {"kafka-ca", "kafka-sasl-password"}.isdisjoint(
        v["name"] for v in template["spec"]["volumes"]
    )
    assert "livenessProbe" not in container


def test_webhook_urls_come_from_the_secrets_named_in_values(
    production_render: list[Manifest],
) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    webhooks = values["notifier"]["webhookSecrets"]
    assert webhooks
    env = _env(_container(production_render, "notifier"))
    for webhook in webhooks:
        entry = env[webhook["name"]]
        assert "value" not in entry
        assert entry["valueFrom"]["secretKeyRef"] == {
            "name": webhook["secretName"],
            "key": webhook["key"],
        }
    # Only the notifier posts to webhooks.
    for component in ("ingest", "processor", "sink", "query"):
        assert not set(_env(_container(production_render, component))) & {
            w["name"] for w in webhooks
        }


def test_without_a_policies_config_map_the_services_read_the_image_policy_file(
    default_render: list[Manifest],
) -> None:
    for name, container in _containers(default_render):
        assert "CIVICMETER_POLICY_FILE" not in _env(container), name
    for component in ("processor", "notifier", "billing", "query"):
        volumes = {v["name"] for v in _pod_spec(default_render, component)["volumes"]}
        assert "policies" not in volumes, component
    # ... so the image must name its own copy of config/policies.yaml.
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert "CIVICMETER_POLICY_FILE=/etc/civicmeter/policies.yaml" in dockerfile
    assert re.search(
        r"^COPY .*config/policies\.yaml /etc/civicmeter/policies\.yaml$", dockerfile, re.M
    )


@pytest.mark.parametrize("component", ["processor", "notifier", "billing", "query"])
def test_a_policies_config_map_is_mounted_where_the_policy_file_points(
    production_render: list[Manifest], component: str
) -> None:
    policy_file = _env(_container(production_render, component))["CIVICMETER_POLICY_FILE"]
    volume, path = _mounted_file(production_render, component, policy_file["value"])
    assert volume["configMap"]["name"] == "civicmeter-policies"
    assert volume["configMap"]["items"] == [{"key": "policies.yaml", "path": path}]


def test_only_processor_notifier_billing_and_query_get_the_policy_file(
    production_render: list[Manifest],
) -> None:
    readers = {
        name
        for name, container in _containers(production_render)
        if "CIVICMETER_POLICY_FILE" in _env(container)
    }
    # The query service reports on the policy's budgets (BudgetService).
    components = ("processor", "notifier", "billing", "query")
    assert readers == {f"{RELEASE}-{component}/{component}" for component in components}


def test_naming_a_policies_config_map_rolls_the_pods(
    helm: str, tmp_path: Path, default_render: list[Manifest]
) -> None:
    def checksums(manifests: list[Manifest]) -> set[str]:
        return {
            template["metadata"]["annotations"]["checksum/config"]
            for name, template in _pod_templates(manifests)
            if name in (f"{RELEASE}-processor", f"{RELEASE}-notifier")
        }

    first = checksums(_render(helm, tmp_path, {"policies": {"existingConfigMap": "policies-a"}}))
    second = checksums(_render(helm, tmp_path, {"policies": {"existingConfigMap": "policies-b"}}))
    assert len(first) == len(second) == 1
    assert len(first | second | checksums(default_render)) == 3


def test_a_disabled_notifier_leaves_nothing_behind(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    values["notifier"]["enabled"] = False
    manifests = _render(helm, tmp_path, values)
    components = [m["metadata"]["labels"].get("app.kubernetes.io/component") for m in manifests]
    assert "notifier" not in components
    rule = _named(manifests, "PrometheusRule", RELEASE)
    alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "CivicmeterWebhookDeliveryFailing" not in alerts
    assert "CivicmeterHighSeverityAnomaly" in alerts


def test_the_alerts_topic_reaches_the_processor_and_the_sink(
    default_render: list[Manifest],
) -> None:
    for component in ("processor", "sink"):
        env = _env(_container(default_render, component))
        assert env["CIVICMETER_TOPIC_ALERTS"]["value"] == "usage.alerts", component


# ---- billing and the seat file


def test_billing_runs_one_restricted_pod_on_clickhouse_and_the_catalog_producing_to_kafka(
    production_render: list[Manifest],
) -> None:
    deployment = _named(production_render, "Deployment", f"{RELEASE}-billing")
    # One ledger keeper: never two pods, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = _container(production_render, "billing")
    assert container["args"] == ["billing"]
    for key, value in RESTRICTED_CONTAINER.items():
        assert container["securityContext"].get(key) == value, key
    env = _env(container)
    assert env["CLICKHOUSE_HOST"]["value"] == "clickhouse.metering.svc"
    assert env["CIVICMETER_BILLING_INTERVAL_SECONDS"]["value"] == "30"
    # Seat charges and budget alerts go to Kafka, for the sink to store; it consumes nothing.
    assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == "metering-kafka-bootstrap.kafka.svc:9093"
    sasl, _ = _mounted_file(production_render, "billing", env["KAFKA_SASL_PASSWORD_FILE"]["value"])
    assert sasl["secret"]["secretName"] == "civicmeter"
    ca, _ = _mounted_file(production_render, "billing", env["KAFKA_SSL_CAFILE"]["value"])
    assert ca["secret"]["secretName"] == "metering-cluster-ca-cert"
    assert (env["CIVICMETER_TOPIC_RATED"]["value"], env["CIVICMETER_TOPIC_ALERTS"]["value"]) == (
        "usage.rated",
        "usage.alerts",
    )
    assert "KAFKA_GROUP_INSTANCE_ID" not in env
    volume, key = _mounted_file(
        production_render, "billing", env["CIVICMETER_PRICES_FILE"]["value"]
    )
    assert volume["configMap"]["name"] == f"{RELEASE}-pricing"
    assert volume["configMap"]["items"] == [
        {"key": "prices.yaml", "path": key},
        {"key": "fx.yaml", "path": "fx.yaml"},  # the FX table the catalog names, next to it
    ]


def test_the_seat_config_map_is_mounted_where_the_seat_file_points(
    production_render: list[Manifest],
) -> None:
    seats_file = _env(_container(production_render, "billing"))["CIVICMETER_SEATS_FILE"]
    volume, path = _mounted_file(production_render, "billing", seats_file["value"])
    assert volume["configMap"]["name"] == "civicmeter-seats"
    assert volume["configMap"]["items"] == [{"key": "seats.csv", "path": path}]
    readers = {
        name
        for name, container in _containers(production_render)
        if "CIVICMETER_SEATS_FILE" in _env(container)
    }
    assert readers == {f"{RELEASE}-billing/billing"}


def test_without_a_seats_config_map_billing_charges_no_seats(
    default_render: list[Manifest],
) -> None:
    assert "CIVICMETER_SEATS_FILE" not in _env(_container(default_render, "billing"))
    volumes = {v["name"] for v in _pod_spec(default_render, "billing")["volumes"]}
    assert "seats" not in volumes


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        ({"billing": {"replicas": 2}}, "/billing/replicas", "maximum"),
        ({"billing": {"intervalSeconds": 0}}, "/billing/intervalSeconds", "exclusiveMinimum"),
        ({"seats": {"existingConfigMap": "s", "key": "seats.txt"}}, "/seats/key", "pattern"),
        ({"seats": {"configMap": "s"}}, "/seats", "'configMap' not allowed"),
    ],
)
def test_the_schema_rejects_bad_billing_and_seat_values(
    helm: str, tmp_path: Path, values: dict[str, Any], path: str, message: str
) -> None:
    result = _lint(helm, tmp_path, values)
    assert result.returncode != 0
    assert path in result.stdout + result.stderr
    assert message in result.stdout + result.stderr


def test_a_disabled_billing_leaves_nothing_behind(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    values["billing"] = {"enabled": False}
    manifests = _render(helm, tmp_path, values)
    components = [m["metadata"]["labels"].get("app.kubernetes.io/component") for m in manifests]
    assert "billing" not in components
    rule = _named(manifests, "PrometheusRule", RELEASE)
    alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "CivicmeterSeatsUnpriced" not in alerts


# ---- gateway keys: ingest authenticates gateways with a mounted file of key hashes

GATEWAY_KEYS = (
    "keys:\n  - id: gw-seoul-1\n    role: gateway\n    organization_id: seoul\n"
    "    sha256: 4f9c2b1d0e8a7f6c5b4a3928171605f4e3d2c1b0a9f8e7d6c5b4a39281716051\n"
)


def _gateway_keys_source(manifests: list[Manifest]) -> tuple[str, str]:
    """(Secret name, key) of the file CIVICMETER_INGEST_KEYS_FILE names in the ingest pod."""
    path = _env(_container(manifests, "ingest"))["CIVICMETER_INGEST_KEYS_FILE"]["value"]
    volume, name = _mounted_file(manifests, "ingest", path)
    (item,) = volume["secret"]["items"]
    assert item["path"] == name
    return volume["secret"]["secretName"], item["key"]


def test_gateway_keys_given_as_a_value_reach_ingest_and_only_ingest(
    helm: str, tmp_path: Path
) -> None:
    manifests = _render(helm, tmp_path, {"gatewayKeyHashes": {"value": GATEWAY_KEYS}})
    secret_name, key = _gateway_keys_source(manifests)
    secret = _named(manifests, "Secret", secret_name)
    assert base64.b64decode(secret["data"][key]).decode() == GATEWAY_KEYS
    for component in ("processor", "sink", "query", "notifier", "billing"):
        assert "CIVICMETER_INGEST_KEYS_FILE" not in _env(_container(manifests, component))
    # The query API's keys are not ingest's: ingest no longer gets that file.
    assert "CIVICMETER_API_KEYS_FILE" not in _env(_container(manifests, "ingest"))


def test_production_takes_the_gateway_keys_from_an_existing_secret(
    production_render: list[Manifest],
) -> None:
    assert _gateway_keys_source(production_render) == (
        "civicmeter-gateway-keys",
        "gateway-keys.yaml",
    )


def test_without_gateway_keys_ingest_gets_no_key_file(default_render: list[Manifest]) -> None:
    ingest = _container(default_render, "ingest")
    assert "CIVICMETER_INGEST_KEYS_FILE" not in _env(ingest)
    assert all(m["name"] != "gateway-keys" for m in ingest["volumeMounts"])


def test_the_schema_rejects_a_misspelt_gateway_key_setting(helm: str, tmp_path: Path) -> None:
    result = _template(helm, tmp_path, {"gatewayKeyHashes": {"existingSecrets": "x"}})
    assert result.returncode != 0
    assert "'existingSecrets' not allowed" in result.stderr


# ---- page token keys: every query replica signs and checks page tokens with the same keys


def test_page_token_keys_reach_every_query_replica_and_only_query(
    helm: str, tmp_path: Path
) -> None:
    keys = "k" * 40 + "," + "o" * 40
    manifests = _render(helm, tmp_path, {"pageTokenKeys": {"value": keys}})
    ref = _env(_container(manifests, "query"))["CIVICMETER_PAGE_TOKEN_KEYS"]["valueFrom"]
    secret = _named(manifests, "Secret", ref["secretKeyRef"]["name"])
    assert base64.b64decode(secret["data"][ref["secretKeyRef"]["key"]]).decode() == keys
    assert _named(manifests, "Deployment", "civicmeter-query")["spec"]["replicas"] >= 2
    for component in ("ingest", "processor", "sink", "notifier", "billing"):
        assert "CIVICMETER_PAGE_TOKEN_KEYS" not in _env(_container(manifests, component))


def test_page_token_keys_from_an_existing_secret(helm: str, tmp_path: Path) -> None:
    manifests = _render(
        helm, tmp_path, {"pageTokenKeys": {"existingSecret": "tokens", "key": "keys"}}
    )
    ref = _env(_container(manifests, "query"))["CIVICMETER_PAGE_TOKEN_KEYS"]["valueFrom"]
    assert ref["secretKeyRef"] == {"name": "tokens", "key": "keys"}


# ---- ephemeral storage (kube-score, checkov)


def _quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity with a binary suffix (64Mi, 2Gi)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", str(text))
    assert match is not None, text
    power = ("Ki", "Mi", "Gi").index(match[2]) + 1
    return int(match[1]) << (10 * power)


@pytest.mark.parametrize("scenario", ["default", "production"])
def test_every_container_requests_and_limits_ephemeral_storage_above_its_empty_dirs(
    default_render: list[Manifest], production_render: list[Manifest], scenario: str
) -> None:
    manifests = default_render if scenario == "default" else production_render
    templates = dict(_pod_templates(manifests))
    assert len(templates) >= 7  # six services and the migration Job
    for name, template in templates.items():
        spec = template["spec"]
        limit = 0
        for container in spec.get("initContainers", []) + spec["containers"]:
            resources = container["resources"]
            request = _quantity(resources["requests"]["ephemeral-storage"])
            limit += _quantity(resources["limits"]["ephemeral-storage"])
            assert 0 < request <= limit, name
        # The pod is evicted when its emptyDirs and logs outgrow the containers' limits:
        # the limits must leave room for every emptyDir full, and logs besides.
        empty_dirs = sum(
            _quantity(v["emptyDir"]["sizeLimit"]) for v in spec["volumes"] if "emptyDir" in v
        )
        assert limit > empty_dirs, name


# ---- the Grafana dashboard

# The Prometheus names of the runtime's histograms and gauge (the metric-name contract) and the
# counters' names as the services create them (civicmeter.x.y -> civicmeter_x_y_total).
CONTRACT_METRICS = {
    "http_server_request_duration_seconds", "rpc_server_call_duration_seconds",
    "messaging_process_duration_seconds", "civicmeter_processor_event_latency_seconds",
    "civicmeter_sink_event_latency_seconds", "civicmeter_sink_write_duration_seconds",
    "civicmeter_sink_batch_size", "db_client_operation_duration_seconds",
    "http_client_request_duration_seconds", "civicmeter_kafka_consumer_lag",
}  # fmt: skip
HISTOGRAMS = CONTRACT_METRICS - {"civicmeter_kafka_consumer_lag"}


def _service_counters() -> set[str]:
    names = set()
    sources = [*(REPO / "services").rglob("*.py"), *(REPO / "sdk").rglob("*.py")]
    for source in sources:
        for name in re.findall(r'create_counter\(\s*"([a-z0-9_.]+)"', source.read_text()):
            names.add(name.replace(".", "_") + "_total")
    return names


def _series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (every selector here has braces)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


def _dashboard(manifests: list[Manifest]) -> dict[str, Any]:
    config_map = _named(manifests, "ConfigMap", f"{RELEASE}-dashboard")
    (key,) = config_map["data"]
    assert key.endswith(".json")
    dashboard: dict[str, Any] = json.loads(config_map["data"][key])
    return dashboard


def test_the_dashboard_is_off_by_default(default_render: list[Manifest]) -> None:
    names = {m["metadata"]["name"] for m in _of_kind(default_render, "ConfigMap")}
    assert f"{RELEASE}-dashboard" not in names


def test_the_dashboard_config_map_carries_the_sidecar_label(
    helm: str, production_render: list[Manifest], tmp_path: Path
) -> None:
    config_map = _named(production_render, "ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Metering"}
    assert config_map["metadata"]["namespace"] == NAMESPACE
    # Another sidecar label and the namespace Grafana watches.
    values = {"metrics": {"grafanaDashboard": {
        "enabled": True, "label": "dashboards.example/grafana", "labelValue": "civicmeter",
        "namespace": "monitoring",
    }}}  # fmt: skip
    config_map = _named(_render(helm, tmp_path, values), "ConfigMap", f"{RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["dashboards.example/grafana"] == "civicmeter"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["namespace"] == "monitoring"


def test_the_dashboard_reads_only_metrics_the_services_export(
    production_render: list[Manifest],
) -> None:
    dashboard = _dashboard(production_render)
    counters = _service_counters()
    assert {"civicmeter_ingest_events_total", "civicmeter_alerts_total"} <= counters
    exported = counters | CONTRACT_METRICS | {f"{name}_bucket" for name in HISTOGRAMS}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            names = _series_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
            used |= names
    # What an operator asks: events in and out of each service, lag, dead letters by reason,
    # latency percentiles (ingest HTTP, gRPC, freshness, ...), alerts by type.
    assert {
        "civicmeter_ingest_events_total", "civicmeter_processor_events_total",
        "civicmeter_sink_events_total", "civicmeter_alerts_total",
        "civicmeter_kafka_consumer_lag",
    } <= used  # fmt: skip
    assert {f"{name}_bucket" for name in HISTOGRAMS} <= used
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert any("sum by (reason)" in e and 'outcome="dead_lettered"' in e for e in exprs)
    assert any("sum by (alert_type)" in e and "civicmeter_alerts_total" in e for e in exprs)
    assert any(e.startswith("histogram_quantile(0.99") for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}


def test_the_alert_rules_read_only_metrics_the_services_export(
    production_render: list[Manifest],
) -> None:
    rule = _named(production_render, "PrometheusRule", RELEASE)
    exported = _service_counters() | CONTRACT_METRICS | {f"{name}_bucket" for name in HISTOGRAMS}
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r.get("alert") == "CivicmeterIngestDown":
                continue  # additionalRules: the platform's own
            names = _series_names(r["expr"])
            assert names <= exported | recorded, (r.get("alert"), names - exported - recorded)


def test_every_dashboard_query_parses(production_render: list[Manifest], tmp_path: Path) -> None:
    """promtool parses each panel's PromQL, Grafana's variables given values."""
    panels = [p for p in _dashboard(production_render)["panels"] if p["type"] != "row"]
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"]
            .replace("$__rate_interval", "2m")
            .replace("$namespace", NAMESPACE),
        }
        for panel in panels
        for target in panel["targets"]
    ]
    assert len(rules) >= 25
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([_tool("promtool"), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
