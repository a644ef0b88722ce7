#!/usr/bin/env bash
# Generates the Python, gRPC and typing stubs from proto/ into services/.
# The stubs are committed; `make proto-check` fails when they drift from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-services}"
googleapis=$(python -c 'import google.type.money_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
mapfile -t protos < <(find proto/civicmeter -name '*.proto' | sort)
python -m grpc_tools.protoc -I proto -I "$googleapis" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "${protos[@]}"
# Only protos that declare a service get a _grpc module.
for proto in "${protos[@]}"; do
  grep -q '^service ' "$proto" && continue
  stem="$out/${proto#proto/}"; stem="${stem%.proto}"
  rm -f "${stem}_pb2_grpc.py" "${stem}_pb2_grpc.pyi"
done
for d in $(find "$out/civicmeter" -path '*/v1' -type d); do
  [ -f "$d/__init__.py" ] || : > "$d/__init__.py"
  parent=$(dirname "$d"); [ -f "$parent/__init__.py" ] || : > "$parent/__init__.py"
done
