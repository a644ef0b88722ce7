#!/usr/bin/env bash
# Install Debian's chromium (the headless browser the HTML report test renders the report in),
# once; later runs find it and exit in milliseconds.
#
#   scripts/chromium.sh   install chromium with apt-get if it is missing, then print its version
#
# CHROMIUM names a browser to use instead of /usr/bin/chromium (the test reads it too). apt-get
# runs as root, or through sudo when the user is not root (CI runners); apt keeps the packages
# it downloaded in its own cache.
set -euo pipefail

SCRIPT_NAME=chromium.sh
log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

browser() {
  local candidate
  for candidate in "${CHROMIUM:-}" chromium chromium-browser; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  return 1
}

install_chromium() {
  command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it; \
install a chromium and set CHROMIUM to it"
  local run_as=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "chromium is missing; apt-get needs root (or sudo)"
    run_as=(sudo)
  fi
  log "installing chromium with apt-get (first run only)"
  "${run_as[@]}" apt-get update -qq >&2
  "${run_as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
}

main() {
  [[ $# -eq 0 ]] || die "usage: scripts/chromium.sh"
  local found
  if ! found="$(browser)"; then
    install_chromium
    found="$(browser)" || die "apt-get installed chromium, but no chromium is on PATH"
  fi
  log "$("$found" --version 2>/dev/null || printf 'chromium') at $found"
}

main "$@"
