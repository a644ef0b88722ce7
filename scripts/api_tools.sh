#!/usr/bin/env bash
# Install the gRPC API tools, pinned, once; later runs reuse them and exit in milliseconds.
#
#   scripts/api_tools.sh                  install any missing tool, then print their versions
#   scripts/api_tools.sh --print-bin-dir  print the directory the tools are in (installs nothing)
#
# Tools are installed into ${CIVICMETER_CACHE_DIR:-~/.cache/civicmeter}/tools (the directory
# deploy/check.sh installs helm and kubeconform into) and linked into its bin/:
#   buf      npm @bufbuild/buf into tools/buf; bin/buf links to the native binary of the
#            platform package npm picks (@bufbuild/buf-<os>-<arch>), so no Node at run time
#   grpcurl  go install (Go module proxy)
# A stamp per tool and version (tools/stamps) marks a finished install: changing a pinned
# version below installs that version on the next run.
set -euo pipefail

BUF_VERSION="1.75.0"
GRPCURL_VERSION="v1.9.4"

CACHE_DIR="${CIVICMETER_CACHE_DIR:-$HOME/.cache/civicmeter}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin"

SCRIPT_NAME=api_tools.sh
# shellcheck source=lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

# buf from the npm registry: @bufbuild/buf and, through its optionalDependencies, the package
# holding this platform's native binary. bin/buf links to that binary, not to the Node shim.
buf_tool() {
  local stamp="$TOOLS_DIR/stamps/buf-$BUF_VERSION"
  if [[ -x "$BIN_DIR/buf" && -f "$stamp" ]]; then
    return
  fi
  command -v npm >/dev/null || die "buf $BUF_VERSION needs npm (npm registry); npm is not on PATH"
  log "installing buf $BUF_VERSION from npm (first run only)"
  local prefix="$TOOLS_DIR/buf"
  mkdir -p "$prefix" "$BIN_DIR" "$TOOLS_DIR/stamps"
  # Its own package.json: npm must not climb to a package.json in a parent directory.
  [[ -f "$prefix/package.json" ]] || printf '{"private": true}\n' >"$prefix/package.json"
  npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
    "@bufbuild/buf@$BUF_VERSION" >&2
  local native
  # shellcheck disable=SC2016  # JavaScript, not shell: ${...} is a JS template literal.
  native="$(cd "$prefix" && node -e '
    const os = process.platform, arch = { x64: "x64", arm64: os === "darwin" ? "arm64" : "aarch64",
      arm: "armv7" }[process.arch];
    process.stdout.write(require.resolve(`@bufbuild/buf-${os}-${arch}/bin/buf`));
  ' 2>/dev/null)" || native=""
  if [[ -z "$native" || ! -x "$native" ]]; then
    # No platform package (an unusual platform): the Node shim still runs buf.
    native="$prefix/node_modules/@bufbuild/buf/bin/buf"
  fi
  ln -sfn "$native" "$BIN_DIR/buf"
  local installed
  installed="$("$BIN_DIR/buf" --version 2>&1)"
  [[ "$installed" == "$BUF_VERSION" ]] || die "npm installed buf '$installed', not $BUF_VERSION"
  touch "$stamp"
}

install_tools() {
  buf_tool
  go_tool grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl/cmd/grpcurl \
    "-X main.version=$GRPCURL_VERSION"
}

main() {
  case "${1:-}" in
    --print-bin-dir)
      printf '%s\n' "$BIN_DIR"
      return 0
      ;;
    "") ;;
    *) die "usage: scripts/api_tools.sh [--print-bin-dir]" ;;
  esac
  install_tools
  log "buf $("$BIN_DIR/buf" --version 2>&1), $("$BIN_DIR/grpcurl" -version 2>&1) in $BIN_DIR"
}

main "$@"
