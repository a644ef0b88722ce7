#!/usr/bin/env bash
# Generates the Python, gRPC and typing stubs from proto/ into one package, civicmeter.api
# (sdk/api/civicmeter/api/<package>/v1), without changing the proto packages: protoc writes
# civicmeter/<package>/v1, and the imports between the stubs are rewritten to civicmeter.api.
# The stubs are committed; `make proto-check` fails when they drift from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-sdk/api}"
googleapis=$(python -c 'import google.type.money_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
mapfile -t protos < <(find proto/civicmeter -name '*.proto' | sort)
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
python -m grpc_tools.protoc -I proto -I "$googleapis" \
  --python_out="$raw" --grpc_python_out="$raw" --mypy_out="$raw" --mypy_grpc_out="$raw" \
  "${protos[@]}"
# Only protos that declare a service get a _grpc module.
for proto in "${protos[@]}"; do
  grep -q '^service ' "$proto" && continue
  stem="$raw/${proto#proto/}"; stem="${stem%.proto}"
  rm -f "${stem}_pb2_grpc.py" "${stem}_pb2_grpc.pyi"
done
packages=$(find proto/civicmeter -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | paste -sd'|')
# Module paths only: import lines and the module names the runtime registers. Proto names
# (civicmeter.alert.v1.Alert, /civicmeter.alert.v1.AlertService/ListAlerts) stay as they are.
find "$raw/civicmeter" -name '*_pb2*' -type f -exec sed -i -E \
  -e "s/(from|import) civicmeter\.($packages)\.v1/\1 civicmeter.api.\2.v1/g" \
  -e "s/'civicmeter\.($packages)\.v1\.([a-z_]+_pb2)'/'civicmeter.api.\1.v1.\2'/g" {} +
mkdir -p "$out/civicmeter/api"
for package in ${packages//|/ }; do
  target="$out/civicmeter/api/$package/v1"
  mkdir -p "$target"
  cp "$raw/civicmeter/$package/v1/"*_pb2* "$target/"
  [ -f "$target/__init__.py" ] || : > "$target/__init__.py"
  [ -f "$(dirname "$target")/__init__.py" ] || : > "$(dirname "$target")/__init__.py"
done
