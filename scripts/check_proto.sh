#!/usr/bin/env bash
# Fails when the committed stubs in sdk/api differ from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash scripts/gen_proto.sh "$tmp" 2>/dev/null
status=0
while IFS= read -r generated; do
  committed="sdk/api/${generated#"$tmp"/}"
  cmp -s "$generated" "$committed" || { echo "drifted: $committed"; status=1; }
done < <(find "$tmp/civicmeter" -name '*_pb2*' -type f)
while IFS= read -r committed; do
  [ -f "$tmp/${committed#sdk/api/}" ] || { echo "no longer generated: $committed"; status=1; }
done < <(find sdk/api/civicmeter -name '*_pb2*' -type f -not -path '*/__pycache__/*')
if [ "$status" -ne 0 ]; then
  echo "generated stubs differ from proto/: run 'make proto' and commit the result" >&2
  exit 1
fi
echo "generated stubs match proto/"
