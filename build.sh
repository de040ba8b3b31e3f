#!/usr/bin/env bash
# build.sh — pysmtp-wasm's one entry point.
#
#   ./build.sh            build dist/: the wheel, the loader, node-forge, the root store and
#                         the Pyodide core — a folder any static web server can serve
#   ./build.sh test [ARGS]  install what the tests need (into .venv), lint, build, run pytest
#                         (the page in Chromium, Firefox and WebKit: -k chromium picks one)
#   ./build.sh serve [FLAGS]  build, then run the demo on 127.0.0.1 (web/demo/serve.py --help);
#                         --no-build skips the build
#   ./build.sh snapshot   build dist/ plus a Pyodide memory snapshot (a faster boot)
#   ./build.sh bench [ARGS] the benchmark (bench/README.md): writes bench/results/latest.json
#
# Everything it needs is installed on first use, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=$VENV/bin/python

log() { printf '==> %s\n' "$*" >&2; }

# Run "$@" (an install from LOCK) unless STAMP says LOCK has not changed since the last one.
when_changed() {
  local lock=$1 stamp=$2 want
  shift 2
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing $lock"
    "$@"
    echo "$want" >"$stamp"
  fi
}

pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check -r "$1"; }

# npm packages exactly as DIR/package-lock.json pins them.
npm_ci() { (cd "$1" && npm ci --no-audit --no-fund --loglevel=error); }

# A venv with the pinned test requirements, refreshed when tests/requirements.txt changes.
ensure_venv() {
  if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  when_changed tests/requirements.txt "$VENV/.requirements.sha256" pip_install tests/requirements.txt
}

build_wheel() {
  mkdir -p dist
  rm -f dist/pysmtp_wasm-*.whl
  log "building the wheel"
  "$PY" -m build --wheel --no-isolation --outdir dist . >/dev/null
  chmod 644 dist/pysmtp_wasm-*.whl
  ls dist/pysmtp_wasm-*.whl >&2
}

# The machine's part (Debian packages, system users) is tests/provision.sh's; the npm packages
# of the Firefox driver (tests/bidi) are the work tree's.
provision() { tests/provision.sh "$@"; }
ensure_bidi() { when_changed tests/bidi/package-lock.json tests/bidi/node_modules/.lock.sha256 npm_ci tests/bidi; }

ensure_npm() { when_changed web/package-lock.json web/node_modules/.lock.sha256 npm_ci web; }

lint() {
  log "ruff and mypy"
  "$VENV/bin/ruff" check pysmtp_wasm tests web bench examples
  "$VENV/bin/ruff" format --check --quiet pysmtp_wasm tests web bench examples
  "$VENV/bin/mypy"
  log "tsc (the JavaScript of web/src, and pysmtp-wasm.d.ts against it)"
  ensure_npm
  web/node_modules/.bin/tsc --checkJs --noEmit -p web
}

# dist/: what a page needs, served from one folder (no CDN).
build_web() {
  ensure_npm
  log "assembling dist/"
  rm -rf dist/pyodide && mkdir -p dist/pyodide
  for f in pyodide.js pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json; do
    cp "web/node_modules/pyodide/$f" dist/pyodide/
  done
  cp web/node_modules/node-forge/dist/forge.min.js dist/
  web/openssl/build.sh dist/openssl  # OpenSSL in WebAssembly: built once, then from the cache
  # Mozilla's root store, as certifi packages it, for TLS without a pinned `ca`.
  cp "$("$PY" -c 'import certifi; print(certifi.where())')" dist/roots.pem
  cp web/src/pysmtp-wasm.d.ts web/minimal.html dist/
  cp web/demo/index.html web/demo/demo.js web/demo/demo.css dist/
  # The loader's three builds (web/src bundled by esbuild), the Worker's ES-module twins of
  # node-forge and OpenSSL's glue, and dist/package.json (the npm manifest): web/build.mjs.
  node web/build.mjs --dist dist
}

run_tests() {
  ensure_venv
  provision chromium browsers mail haproxy
  ensure_bidi
  # esbuild and TypeScript for tests/test_npm_package.py (the packed dist/, bundled and type-checked)
  when_changed tests/npm/package-lock.json tests/npm/node_modules/.lock.sha256 npm_ci tests/npm
  lint
  build_wheel
  build_web
  log "running pytest $*"
  local rc=0
  "$PY" -m pytest --runtime chrome --dist-dir dist "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
  fi
  exit "$rc"
}

# The demo: dist/ and its JSON API, an embedded SMTP server and pysmtp-wasm-proxy for exactly
# its targets, until Ctrl-C. exec: the signals go straight to serve.py, which stops it all.
serve() {
  local arg build=1
  for arg in "$@"; do [ "$arg" != --no-build ] || build=0; done
  ensure_venv
  if [ "$build" -eq 1 ]; then
    build_wheel
    build_web
  fi
  exec "$PY" web/demo/serve.py "$@"
}

# dist/pyodide/pysmtp-snapshot.bin: a Pyodide memory snapshot with pysmtp_wasm imported, which
# PySmtp.load() then uses (a faster boot). Made in headless Chromium; any rebuild of dist/
# drops it (it is tied to that Pyodide build and that wheel).
build_snapshot() {
  log "making the Pyodide memory snapshot"
  "$PY" web/make_snapshot.py  # then it builds the loaders again, told of the snapshot (web/build.mjs)
}

# The benchmark (bench/README.md): this project against emailjs-smtp-client, smtplib and the
# raw limit of the path, in one run. Not part of `test`: it takes about 10 minutes.
run_bench() {
  ensure_venv
  when_changed bench/requirements.txt "$VENV/.bench-requirements.sha256" pip_install bench/requirements.txt
  provision chromium browsers lighttpd
  ensure_bidi
  build_wheel
  build_web
  build_snapshot
  when_changed bench/package-lock.json bench/node_modules/.lock.sha256 npm_ci bench
  log "bundling emailjs-smtp-client"
  bench/build-emailjs.sh
  "$PY" bench/run.py "$@"
}

case "${1:-build}" in
  build) ensure_venv; build_wheel; build_web ;;
  test) shift; run_tests "$@" ;;
  serve) shift; serve "$@" ;;
  snapshot) ensure_venv; provision chromium; build_wheel; build_web; build_snapshot ;;
  bench) shift; run_bench "$@" ;;
  *) echo "usage: $0 [build|test [pytest args]|serve [flags]|snapshot|bench [--runs N] [--quick] [--only GROUPS]]" >&2; exit 2 ;;
esac
