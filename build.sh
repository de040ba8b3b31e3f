#!/usr/bin/env bash
# build.sh — pysmtp-wasm's one entry point.
#
#   ./build.sh            build the wheel into dist/
#   ./build.sh test [ARGS]  install what the tests need (into .venv), lint, build, run pytest
#
# Everything it needs is installed on first use, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=$VENV/bin/python

log() { printf '==> %s\n' "$*" >&2; }

# A venv with the pinned test requirements, refreshed when tests/requirements.txt changes.
ensure_venv() {
  if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp=$VENV/.requirements.sha256 want
  want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing tests/requirements.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
  fi
}

build_wheel() {
  mkdir -p dist
  rm -f dist/pysmtp_wasm-*.whl
  log "building the wheel"
  "$PY" -m build --wheel --no-isolation --outdir dist . >/dev/null
  ls dist/pysmtp_wasm-*.whl >&2
}

lint() {
  log "ruff and mypy"
  "$VENV/bin/ruff" check pysmtp_wasm tests
  "$VENV/bin/ruff" format --check --quiet pysmtp_wasm tests
  "$VENV/bin/mypy"
}

run_tests() {
  ensure_venv
  lint
  build_wheel
  log "running pytest $*"
  local rc=0
  "$PY" -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
  fi
  exit "$rc"
}

case "${1:-build}" in
  build) ensure_venv; build_wheel ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: $0 [build|test [pytest args]]" >&2; exit 2 ;;
esac
