#!/usr/bin/env bash
# Lint, render and validate the Helm chart offline; exits non-zero on any failure.
#
#   deploy/check.sh                 install missing tools, then check every values scenario
#   deploy/check.sh --install-only  only install the tools (CI caches them)
#
# Tools are installed once into ${CIVICMETER_CACHE_DIR:-~/.cache/civicmeter}/tools and reused:
#   helm, kubeconform   go install (Go module proxy), pinned below
#   Kubernetes schemas  PyPI kubernetes-validate (its package data), turned into standalone
#                       JSON schemas kubeconform can read without a network
#   promtool            Debian's prometheus package (only promtool is extracted from it)
#
# Each scenario (the default values, then every ci/*-values.yaml) is checked with
#   helm lint --strict, helm template | kubeconform -strict (for each Kubernetes version in
#   CIVICMETER_KUBERNETES_VERSIONS), and promtool check rules on the rendered PrometheusRule;
#   for the production scenario also promtool test rules (deploy/alerts_test.yaml).
# kubeconform has no schema for the prometheus-operator CRDs offline, so it skips
# ServiceMonitor and PrometheusRule; promtool checks the rules themselves.
set -euo pipefail

HELM_VERSION="v3.22.0"
# helm's default Kubernetes version (for .Capabilities and lint) is set at build time by its
# Makefile from the k8s.io/client-go it uses (v0.37 in helm v3.22.0); go install must do the same.
HELM_KUBE_VERSION_MINOR="37"
KUBECONFORM_VERSION="v0.8.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBERNETES_VERSIONS="${CIVICMETER_KUBERNETES_VERSIONS:-1.27.0 1.37.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/deploy/helm/civicmeter"
CACHE_DIR="${CIVICMETER_CACHE_DIR:-$HOME/.cache/civicmeter}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin"
SCHEMA_DIR="$TOOLS_DIR/kubernetes-json-schema"
export PATH="$BIN_DIR:$PATH"
# helm keeps its own config and caches next to the tools, not in the user's helm setup.
export HELM_CACHE_HOME="$TOOLS_DIR/helm/cache"
export HELM_CONFIG_HOME="$TOOLS_DIR/helm/config"
export HELM_DATA_HOME="$TOOLS_DIR/helm/data"

SCRIPT_NAME=check.sh
# shellcheck source=../scripts/lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"

# Standalone Kubernetes JSON schemas from the kubernetes-validate wheel, for kubeconform.
kubernetes_schemas() {
  local stamp="$TOOLS_DIR/stamps/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  local venv="$TOOLS_DIR/venv" version missing=()
  for version in $KUBERNETES_VERSIONS; do
    [[ -d "$SCHEMA_DIR/v$version-standalone-strict" ]] || missing+=("$version")
  done
  if [[ -f "$stamp" && ${#missing[@]} -eq 0 ]]; then
    return
  fi
  if [[ ! -f "$stamp" ]]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI (first run only)"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    rm -rf "$SCHEMA_DIR"
    read -r -a missing <<<"$KUBERNETES_VERSIONS"
  fi
  local package_dir
  package_dir="$("$venv/bin/python" -c \
    'import kubernetes_validate, pathlib; print(pathlib.Path(kubernetes_validate.__file__).parent)')"
  for version in "${missing[@]}"; do
    log "writing standalone schemas for Kubernetes $version"
    "$venv/bin/python" "$ROOT/deploy/kubeconform_schemas.py" \
      "$package_dir/kubernetes-json-schema" "$version" "$SCHEMA_DIR"
  done
  mkdir -p "$TOOLS_DIR/stamps"
  touch "$stamp"
}

# promtool: from PATH, else extracted from Debian's prometheus package (no daemon installed).
promtool_tool() {
  if command -v promtool >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "promtool is not on PATH and apt-get is not available"
  log "installing promtool from Debian's prometheus package (first run only)"
  local work
  work="$(mktemp -d)"
  # apt-get download needs package lists; refresh them when they have never been fetched.
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    local sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    (cd "$work" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$BIN_DIR"
  install -m 0755 "$work/root/usr/bin/promtool" "$BIN_DIR/promtool"
  rm -rf "$work"
}

install_tools() {
  local helm_pkg=helm.sh/helm/v3
  go_tool helm "$HELM_VERSION" "$helm_pkg/cmd/helm" \
    "-X $helm_pkg/internal/version.version=$HELM_VERSION
     -X $helm_pkg/pkg/chartutil.k8sVersionMajor=1
     -X $helm_pkg/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_VERSION_MINOR
     -X $helm_pkg/pkg/lint/rules.k8sVersionMajor=1
     -X $helm_pkg/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_VERSION_MINOR"
  go_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform \
    "-X main.version=$KUBECONFORM_VERSION"
  kubernetes_schemas
  promtool_tool
}

# The spec of the rendered PrometheusRule (a Prometheus rules file), or nothing.
rules_from_manifests() {
  "$TOOLS_DIR/venv/bin/python" -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "PrometheusRule":
        yaml.safe_dump(doc["spec"], sys.stdout, sort_keys=False)
'
}

# deploy/alerts_test.yaml: promtool unit tests of the alert rules as this scenario renders them
# (in namespace civicmeter), on synthetic series.
RULES_TEST_SCENARIO=production
alert_unit_tests() {
  local rules="$1" unit="$2/alerts-unit"
  mkdir -p "$unit"
  cp "$rules" "$unit/rules.yaml"
  cp "$ROOT/deploy/alerts_test.yaml" "$unit/alerts_test.yaml"
  (cd "$unit" && promtool test rules alerts_test.yaml)
}

check_scenario() {
  local name="$1" work="$2"
  shift 2
  local values=("$@") failed=0 version rendered
  log "scenario $name"
  if ! helm lint --strict "$CHART" "${values[@]}" >"$work/lint.out" 2>&1; then
    cat "$work/lint.out" >&2
    failed=1
  fi
  for version in $KUBERNETES_VERSIONS; do
    rendered="$work/$name-$version.yaml"
    if ! helm template civicmeter "$CHART" --namespace civicmeter --kube-version "$version" \
      "${values[@]}" >"$rendered"; then
      failed=1
      continue
    fi
    printf 'Kubernetes %s: ' "$version" >&2
    if ! kubeconform -strict -summary -kubernetes-version "$version" \
      -schema-location "$SCHEMA_DIR/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -skip ServiceMonitor,PrometheusRule "$rendered"; then
      failed=1
    fi
  done
  if [[ $failed -eq 0 ]]; then
    rules_from_manifests <"$rendered" >"$work/$name-rules.yaml"
    if [[ -s "$work/$name-rules.yaml" ]]; then
      promtool check rules "$work/$name-rules.yaml" || failed=1
      if [[ $name == "$RULES_TEST_SCENARIO" ]]; then
        alert_unit_tests "$work/$name-rules.yaml" "$work" || failed=1
      fi
    else
      log "scenario $name renders no PrometheusRule"
    fi
  fi
  return "$failed"
}

main() {
  local install_only=0
  case "${1:-}" in
    --install-only) install_only=1 ;;
    "") ;;
    *) die "usage: deploy/check.sh [--install-only]" ;;
  esac
  install_tools
  log "helm $(helm version --template '{{ .Version }}'), kubeconform $(kubeconform -v)," \
    "$(promtool --version 2>&1 | sed -n 1p)"
  [[ $install_only -eq 1 ]] && return 0

  local failures=() file name
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  check_scenario default "$WORK" || failures+=(default)
  for file in "$CHART"/ci/*-values.yaml; do
    name="$(basename "$file" -values.yaml)"
    check_scenario "$name" "$WORK" -f "$file" || failures+=("$name")
  done
  if [[ ${#failures[@]} -gt 0 ]]; then
    die "failed: ${failures[*]}"
  fi
  log "chart OK: every scenario lints, renders, validates (Kubernetes $KUBERNETES_VERSIONS)" \
    "and its alert rules parse and pass their unit tests"
}

main "$@"
