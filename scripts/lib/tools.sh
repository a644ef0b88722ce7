# Shared by the scripts that install pinned tools into the project's cache (sourced, not run).
# The caller sets TOOLS_DIR and BIN_DIR first, and SCRIPT_NAME for messages.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${SCRIPT_NAME:-tools}" "$*" >&2; exit 1; }

# go install PACKAGE@VERSION into BIN_DIR, unless this exact version is there already.
go_tool() {
  local name="$1" version="$2" package="$3" ldflags="${4:-}"
  local stamp
  stamp="$TOOLS_DIR/stamps/$name-$version-$(printf '%s' "$ldflags" | cksum | cut -d' ' -f1)"
  if [[ -x "$BIN_DIR/$name" && -f "$stamp" ]]; then
    return
  fi
  command -v go >/dev/null || die "$name $version needs Go (go install); Go is not on PATH"
  log "installing $name $version with $(go version | cut -d' ' -f3) (first run only)"
  mkdir -p "$BIN_DIR" "$TOOLS_DIR/stamps"
  GOBIN="$BIN_DIR" GOFLAGS="-buildvcs=false" \
    go install -trimpath -ldflags "-s -w $ldflags" "$package@$version"
  touch "$stamp"
}
