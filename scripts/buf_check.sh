#!/usr/bin/env bash
# Lint the gRPC API in proto/ and check it for breaking changes against the v1 baseline, offline.
#
#   scripts/buf_check.sh                    buf lint, then buf breaking against the baseline
#   scripts/buf_check.sh --prepare          only set up the googleapis module (to run buf by hand)
#   scripts/buf_check.sh --write-baseline   rewrite the baseline from proto/, after checking that
#                                           proto/ does not break the current baseline
#
# The baseline proto/baseline/civicmeter-v1.binpb is a buf image of the published v1 API
# (buf build proto --exclude-source-info). v1 must never break: rename, renumber, retype or
# delete nothing in it. Additive changes (new fields, messages, enum values, RPCs) pass against
# the old baseline; after releasing them, refresh it with --write-baseline so they are
# protected too, and commit it with the .proto change. A change v1 cannot take goes into a new
# package (civicmeter.<name>.v2). See proto/README.md.
#
# buf and the googleapis protos: buf comes from scripts/api_tools.sh (installed on first use);
# google/type/money.proto from the googleapis-common-protos package in .venv, copied into the
# git-ignored .civicmeter/buf/googleapis that buf.yaml lists as a second module (no BSR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASELINE="proto/baseline/civicmeter-v1.binpb"
GOOGLEAPIS="$ROOT/.civicmeter/buf/googleapis"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'buf_check.sh: %s\n' "$*" >&2; exit 1; }

# The Python with googleapis-common-protos: the project's venv, else python3 on PATH.
python_bin() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then
    printf '%s\n' "$ROOT/.venv/bin/python"
  else
    command -v python3 || die "no .venv and no python3 on PATH: run make install"
  fi
}

# Mirror the .proto files of the installed googleapis-common-protos into GOOGLEAPIS
# (only files that differ are written; files the package no longer has are removed).
prepare_googleapis() {
  "$(python_bin)" - "$GOOGLEAPIS" <<'PY'
import filecmp
import importlib.metadata
import shutil
import sys
from pathlib import Path

dest = Path(sys.argv[1])
try:
    dist = importlib.metadata.distribution("googleapis-common-protos")
except importlib.metadata.PackageNotFoundError:
    sys.exit(f"buf_check.sh: googleapis-common-protos is not installed in {sys.executable}")
wanted = {}
for file in dist.files or []:
    if file.suffix == ".proto":
        wanted[Path(*file.parts)] = Path(str(file.locate()))
if not any(path.as_posix() == "google/type/money.proto" for path in wanted):
    sys.exit("buf_check.sh: googleapis-common-protos has no google/type/money.proto")
for relative, source in wanted.items():
    target = dest / relative
    if not (target.is_file() and filecmp.cmp(source, target, shallow=False)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
for stale in dest.rglob("*.proto"):
    if stale.relative_to(dest) not in wanted:
        stale.unlink()
PY
}

main() {
  local mode="check"
  case "${1:-}" in
    --prepare) mode="prepare" ;;
    --write-baseline) mode="write" ;;
    "") ;;
    *) die "usage: scripts/buf_check.sh [--prepare | --write-baseline]" ;;
  esac
  prepare_googleapis
  [[ $mode == prepare ]] && return 0

  bash "$ROOT/scripts/api_tools.sh"
  local bin_dir
  bin_dir="$(bash "$ROOT/scripts/api_tools.sh" --print-bin-dir)"
  export PATH="$bin_dir:$PATH"
  # buf's own cache stays next to the tools, not in the user's ~/.cache/buf.
  export BUF_CACHE_DIR="${BUF_CACHE_DIR:-$(dirname "$bin_dir")/buf/cache}"
  cd "$ROOT"

  local failed=0
  log "buf lint proto (STANDARD, as configured in buf.yaml)"
  buf lint proto || failed=1
  if [[ -f "$BASELINE" ]]; then
    log "buf breaking proto --against $BASELINE (FILE)"
    buf breaking proto --against "$BASELINE" || failed=1
  elif [[ $mode != write ]]; then
    log "no $BASELINE: write it with scripts/buf_check.sh --write-baseline"
    failed=1
  fi
  [[ $failed -eq 0 ]] || die "proto/ fails buf lint or breaks the v1 baseline (see above)"

  if [[ $mode == write ]]; then
    mkdir -p "$(dirname "$BASELINE")"
    buf build proto --exclude-source-info -o "$BASELINE"
    log "wrote $BASELINE: commit it with the .proto change"
    return 0
  fi
  log "proto OK: lint clean, no breaking change against $BASELINE"
}

main "$@"
