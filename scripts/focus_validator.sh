#!/usr/bin/env bash
# Install the FinOps Foundation's FOCUS validator (PyPI focus-validator), pinned, once, in its own
# virtualenv; later runs reuse it and exit in milliseconds.
#
#   scripts/focus_validator.sh                 install it if missing, then print its path
#   scripts/focus_validator.sh --print-bin-dir print the directory of the wrapper (installs nothing)
#
# It lives apart from the project's virtualenv: it needs Python >= 3.12 and pins numpy and
# pyarrow versions of its own. It reads a file by a path relative to the working directory
# (focus_validator/rules/currency_codes.csv), so it must run from its site-packages directory:
# the wrapper bin/focus-validator does that, and reads the FOCUS rules the package ships
# (--block-download: no fetch from the network at run time). Give it absolute data paths.
#
# Installed into ${CIVICMETER_CACHE_DIR:-~/.cache/civicmeter}/tools/focus-validator-<version>,
# the wrapper linked as tools/bin/focus-validator. FOCUS_VALIDATOR_PYTHON names the Python to
# build the virtualenv with; otherwise the first of python3.12, python3.13 on PATH or under pyenv
# (3.12 first: the numpy the validator pins has wheels for it, none for 3.13).
set -euo pipefail

FOCUS_VALIDATOR_VERSION="2.2.1"
# It pins numpy<2 but not pyarrow, whose releases from 20 on need numpy 2: pin it here.
PYARROW_PIN="pyarrow>=17,<20"

CACHE_DIR="${CIVICMETER_CACHE_DIR:-$HOME/.cache/civicmeter}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin"

SCRIPT_NAME=focus_validator.sh
# shellcheck source=lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tools.sh"

# A Python >= 3.12, as the validator requires.
find_python() {
  local candidate
  for candidate in "${FOCUS_VALIDATOR_PYTHON:-}" python3.12 python3.13; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null && "$candidate" -c \
      'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  local root
  root="$(pyenv root 2>/dev/null || printf '%s' "${PYENV_ROOT:-$HOME/.pyenv}")"
  for candidate in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3; do
    if [[ -x "$candidate" ]]; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  die "focus-validator $FOCUS_VALIDATOR_VERSION needs Python >= 3.12: none on PATH or under \
pyenv; set FOCUS_VALIDATOR_PYTHON to one"
}

install_validator() {
  local prefix="$TOOLS_DIR/focus-validator-$FOCUS_VALIDATOR_VERSION"
  local stamp="$TOOLS_DIR/stamps/focus-validator-$FOCUS_VALIDATOR_VERSION-${PYARROW_PIN//[^0-9]/}"
  if [[ -x "$BIN_DIR/focus-validator" && -f "$stamp" ]]; then
    return
  fi
  local python
  python="$(find_python)"
  log "installing focus-validator $FOCUS_VALIDATOR_VERSION with $("$python" --version) (first run only)"
  rm -rf "$prefix"
  mkdir -p "$BIN_DIR" "$TOOLS_DIR/stamps"
  "$python" -m venv "$prefix"
  "$prefix/bin/pip" install --quiet --disable-pip-version-check --prefer-binary \
    "focus-validator==$FOCUS_VALIDATOR_VERSION" "$PYARROW_PIN" >&2
  local packages
  packages="$("$prefix/bin/python" -c \
    'import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))')"
  cat >"$prefix/focus-validator" <<EOF
#!/usr/bin/env bash
# focus-validator $FOCUS_VALIDATOR_VERSION, run from its package directory (it opens a file there
# by a relative path) with the rules it ships.
cd "$packages" && exec "$prefix/bin/focus-validator" --block-download "\$@"
EOF
  chmod +x "$prefix/focus-validator"
  ln -sfn "$prefix/focus-validator" "$BIN_DIR/focus-validator"
  touch "$stamp"
}

main() {
  case "${1:-}" in
    --print-bin-dir)
      printf '%s\n' "$BIN_DIR"
      return 0
      ;;
    "") ;;
    *) die "usage: scripts/focus_validator.sh [--print-bin-dir]" ;;
  esac
  install_validator
  log "focus-validator $FOCUS_VALIDATOR_VERSION in $BIN_DIR"
}

main "$@"
