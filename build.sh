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

lint() {
  log "ruff and mypy"
  "$VENV/bin/ruff" check pysmtp_wasm tests web bench examples
  "$VENV/bin/ruff" format --check --quiet pysmtp_wasm tests web bench examples
  "$VENV/bin/mypy"
}

ensure_npm() { when_changed web/package-lock.json web/node_modules/.lock.sha256 npm_ci web; }

# The constants and sources shared by both builds of the loader (classic script, ES module).
loader_body() {
  printf 'const VERSION = "%s";\nconst WHEEL = "%s";\nconst SNAPSHOT = null;\n' "$1" "$2"
  cat web/src/tls.js web/src/socket.js web/src/remote.js web/src/loader.js
}

# dist/: what a page needs, served from one folder (no CDN).
build_web() {
  ensure_npm
  local version wheel
  version=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
  wheel=$(basename dist/pysmtp_wasm-*.whl)
  log "assembling dist/ (pysmtp-wasm $version)"
  rm -rf dist/pyodide && mkdir -p dist/pyodide
  for f in pyodide.js pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json; do
    cp "web/node_modules/pyodide/$f" dist/pyodide/
  done
  cp web/node_modules/node-forge/dist/forge.min.js dist/
  web/openssl/build.sh dist/openssl  # OpenSSL in WebAssembly: built once, then from the cache
  # ES-module twins of those two classic scripts, for the module Worker of worker mode (it has
  # no document for a <script>): the same code, setting the same global. (node-forge's wrapper
  # names `window`, which a Worker does not have.)
  { printf 'const window = globalThis;\n'; cat dist/forge.min.js; printf '\nexport default globalThis.forge;\n'; } >dist/forge.min.mjs
  { cat dist/openssl/openssl-tls.js; printf '\nglobalThis.PySmtpOpenSSL = PySmtpOpenSSL;\nexport default PySmtpOpenSSL;\n'; } >dist/openssl/openssl-tls.mjs
  # Mozilla's root store, as certifi packages it, for TLS without a pinned `ca`.
  cp "$("$PY" -c 'import certifi; print(certifi.where())')" dist/roots.pem
  cp web/src/pysmtp-wasm.d.ts web/minimal.html dist/
  cp web/demo/index.html web/demo/demo.js web/demo/demo.css dist/
  {
    printf '/*! pysmtp-wasm %s (MIT) - classic script: defines globalThis.PySmtp */\n' "$version"
    printf '(function () {\n"use strict";\n'
    printf 'const SCRIPT_URL = (typeof document !== "undefined" && document.currentScript && document.currentScript.src) || location.href;\n'
    loader_body "$version" "$wheel"
    printf 'globalThis.PySmtp = PySmtp;\n})();\n'
  } >dist/pysmtp-wasm.js
  {
    printf '/*! pysmtp-wasm %s (MIT) - ES module */\n' "$version"
    printf 'const SCRIPT_URL = import.meta.url;\n'
    loader_body "$version" "$wheel"
    printf 'globalThis.PySmtp ??= PySmtp;\nexport const load = PySmtp.load;\nexport default PySmtp;\n'
  } >dist/pysmtp-wasm.mjs
  {
    # PySmtp.load({worker: true}): the script of a module Worker (Pyodide refuses classic ones):
    # the same loader, and web/src/worker.js to forward messages.
    printf '/*! pysmtp-wasm %s (MIT) - the Worker of PySmtp.load({worker: true}) */\n' "$version"
    printf '(function () {\n"use strict";\nconst SCRIPT_URL = location.href;\n'
    loader_body "$version" "$wheel"
    cat web/src/worker.js
    printf '})();\n'
  } >dist/pysmtp-wasm-worker.js
  copy_licenses
  npm_manifest "$version" >dist/package.json
}

# The licences of what dist/ ships: ours (LICENSE), and in licenses/ Pyodide's (MPL-2.0, with
# CPython's note) and node-forge's (from the pinned package). (OpenSSL's is openssl/'s own.)
copy_licenses() {
  cp LICENSE dist/LICENSE
  rm -rf dist/licenses && mkdir -p dist/licenses
  cp web/licenses/pyodide-MPL-2.0.txt dist/licenses/
  cp web/node_modules/node-forge/LICENSE dist/licenses/node-forge-LICENSE.txt
}

# dist/package.json: dist/ as an npm package (`npm pack dist`): the ES module entry, the classic
# script, the types, and every asset the loader fetches at run time (served from node_modules/
# pysmtp-wasm/ or a copy of it: README "npm"), the snapshot when `./build.sh snapshot` made one
# (the loaders then ask for it); not the demo.
npm_manifest() {
  "$PY" - "$1" <<'PYEOF'
import json, sys
print(json.dumps({
    "name": "pysmtp-wasm",
    "version": sys.argv[1],
    "description": "SMTP/LMTP client with emailjs-smtp-client's API, its engine in Python (Pyodide), for the browser",
    "license": "MIT",
    "module": "./pysmtp-wasm.mjs",
    "types": "./pysmtp-wasm.d.ts",
    "exports": {
        ".": {"types": "./pysmtp-wasm.d.ts", "default": "./pysmtp-wasm.mjs"},
        "./pysmtp-wasm.js": "./pysmtp-wasm.js",
        "./package.json": "./package.json",
    },
    "sideEffects": True,
    "files": [
        "pysmtp-wasm.mjs", "pysmtp-wasm.js", "pysmtp-wasm.d.ts", "pysmtp-wasm-worker.js",
        "pysmtp_wasm-*.whl", "roots.pem", "forge.min.js", "forge.min.mjs", "openssl/",
        "pyodide/pyodide.js", "pyodide/pyodide.mjs", "pyodide/pyodide.asm.mjs",
        "pyodide/pyodide.asm.wasm", "pyodide/python_stdlib.zip", "pyodide/pyodide-lock.json",
        "pyodide/pysmtp-snapshot.bin", "minimal.html", "LICENSE", "licenses/",
    ],
}, indent=2))
PYEOF
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
  "$PY" web/make_snapshot.py  # it also tells the loader in dist/ that there is a snapshot
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
